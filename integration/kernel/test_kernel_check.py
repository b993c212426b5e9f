"""kernel check, nic-for and build's refusal on Debian's real kernel (fetched into the cache, as boot-test
does), and on copies of it made here without aoe.ko or without virtio_pci.ko. No QEMU."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from netbootgen.cache import cache_dir
from netbootgen.cli import main
from netbootgen.emulate.pvh import bzimage_payload, pvh_kernel
from netbootgen.inventory import example_text
from netbootgen.kernel.check import KernelFacts
from netbootgen.kernel.fetch import KernelTree, fetch_kernel


@pytest.fixture
def cli() -> Callable[..., Result]:
    def run(*args: str | os.PathLike[str], expect: int) -> Result:
        res = CliRunner().invoke(main, [os.fspath(a) for a in args])
        if res.exception is not None and not isinstance(res.exception, SystemExit):
            raise res.exception
        assert res.exit_code == expect, res.output
        return res

    return run


@pytest.fixture(scope="module")
def kernel() -> KernelTree:
    return fetch_kernel("auto", cache_dir())


def without(kernel: KernelTree, dest: Path, module: str) -> Path:
    """A copy of `kernel` at `dest` minus `module`: folders on the way to it are real, everything else is
    a symlink into the cached tree; modules.dep and modules.alias lose the module's lines."""
    rel = next(line.partition(":")[0] for line in (kernel.moddir / "modules.dep").read_text().splitlines()
               if Path(line.partition(":")[0]).name.split(".ko")[0] == module)
    drop = Path("lib/modules") / kernel.version / rel

    def farm(src: Path, dst: Path, rel_dir: Path) -> None:
        dst.mkdir(parents=True)
        for entry in sorted(src.iterdir()):
            here = rel_dir / entry.name
            if here == drop:
                continue
            if entry.is_dir() and drop.is_relative_to(here):
                farm(entry, dst / entry.name, here)
            elif entry.name in ("modules.dep", "modules.alias"):
                lines = entry.read_text().splitlines()
                keep = [x for x in lines if not (x.startswith(rel + ":") or x.endswith(" " + module))]
                (dst / entry.name).write_text("\n".join(keep) + "\n")
            else:
                (dst / entry.name).symlink_to(entry)

    farm(kernel.root, dest, Path())
    return dest


def inventory(tmp: Path, kernel_path: Path | None = None) -> Path:
    text = example_text()
    if kernel_path is not None:
        assert 'kernel_version = "auto"' in text
        text = text.replace('kernel_version = "auto"', f'kernel_path = "{kernel_path}"')
    path = tmp / "netboot.toml"
    path.write_text(text)
    return path


def test_debian_kernel_passes(tmp_path: Path, kernel: KernelTree, cli: Callable[..., Result]) -> None:
    res = cli("kernel", "check", inventory(tmp_path), expect=0)
    assert f"kernel {kernel.version}" in res.output
    assert "ok       AoE: aoe" in res.output
    assert "virtio_pci" in res.output and "virtio_net" in res.output
    res = cli("kernel", "nic-for", "1af4:1000", inventory(tmp_path), expect=0)
    mods = res.stdout.split()
    assert mods.index("virtio_pci") < mods.index("virtio_net") == len(mods) - 1
    assert mods.index("virtio_ring") < mods.index("virtio_pci")
    assert cli("kernel", "nic-for", "8086:10d3", inventory(tmp_path), expect=0).stdout.split()[-1] == "e1000e"


@pytest.mark.parametrize("module", ["aoe", "virtio_net", "ext4", "e1000e", "mlx5_core", "xfs"])
def test_dependencies_agree_with_depmod_and_modinfo(kernel: KernelTree, module: str) -> None:
    """The closure read from .modinfo equals modules.dep's line (depmod read the symbols); the fields equal
    kmod's modinfo's."""
    facts = KernelFacts.load(kernel)
    closure = facts.index.closure([module])
    assert set(closure[:-1]) == set(facts.index.dep_lines[module]) and closure[-1] == module
    info = facts.index.modinfo(module)
    for field in ("alias", "depends", "vermagic", "firmware"):
        kmod = subprocess.run(["modinfo", "-b", os.fspath(kernel.root), "-k", kernel.version, "-F", field,
                               module], capture_output=True, text=True, check=True).stdout.splitlines()
        ours = info.all(field)
        assert sorted(x.strip() for x in ours if x) == sorted(x.strip() for x in kmod if x), field


@pytest.mark.parametrize(("module", "symbol"), [("aoe", "CONFIG_ATA_OVER_ETH"), ("virtio_pci", "CONFIG_VIRTIO_PCI")])
def test_a_kernel_without_a_module_is_refused(tmp_path: Path, kernel: KernelTree, module: str, symbol: str,
                                              cli: Callable[..., Result]) -> None:
    tree = without(kernel, tmp_path / "kernel", module)
    inv = inventory(tmp_path, tree)
    res = cli("kernel", "check", inv, expect=1)
    assert f"      {symbol}=m" in res.output, res.output
    out = tmp_path / "out"
    res = cli("build", inv, "--out", out, expect=1)
    assert symbol in res.output
    assert not out.exists()
    assert shutil.which("modinfo")  # the comparison test above ran with kmod's modinfo


def test_debian_kernel_boots_through_pvh(kernel: KernelTree) -> None:
    """Debian's bzImage (xz) holds an ELF kernel with the PVH entry note: what direct boots hand QEMU."""
    assert bzimage_payload(kernel.vmlinuz.read_bytes())[0] == "xz"
    elf = pvh_kernel(kernel.vmlinuz, cache_dir())
    assert elf is not None
    data = elf.read_bytes()
    assert data.startswith(b"\x7fELF\x02") and len(data) > 4 * kernel.vmlinuz.stat().st_size
    assert f"Linux version {kernel.version} ".encode() in data
