"""netbootgen kernel check / nic-for on small kernel trees made here (gcc objects with a .modinfo section, the
index files depmod would write), and profiles.*.nic_pci in the inventory."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from netbootgen.inventory import load_inventory
from netbootgen.kernel.check import KernelFacts, check_profile, nic_chain
from netbootgen.kernel.fetch import local_kernel
from netbootgen.kernel.modinfo import PciDevice
from tests.conftest import BASE_INVENTORY, edit

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not found")

KVER = "9.9.9-test"
# name -> (depends, aliases, firmware)
MODULES: dict[str, tuple[str, list[str], list[str]]] = {
    "virtio_ring": ("", [], []),
    "virtio": ("virtio_ring", [], []),
    "virtio_pci": ("virtio,virtio_ring", ["pci:v00001AF4d*sv*sd*bc*sc*i*"], []),
    "failover": ("", [], []),
    "virtio_net": ("virtio,virtio_ring,failover", ["virtio:d00000001v*"], []),
    "aoe": ("", [], []),
    "jbd2": ("", [], []),
    "ext4": ("jbd2", ["fs-ext4", "fs-ext2"], []),
    "e1000e": ("", ["pci:v00008086d000010D3sv*sd*bc*sc*i*"], []),
    "tg3": ("", ["pci:v000014E4d00001644sv*sd*bc*sc*i*"], ["tigon/tg3.bin"]),
}


def make_kernel(tmp: Path, *, without: tuple[str, ...] = (), vermagic: str = KVER,
                config: str = "CONFIG_ATA_OVER_ETH=m\nCONFIG_EXT4_FS=m\nCONFIG_BLK_DEV_INITRD=y\nCONFIG_RD_GZIP=y\n"
                ) -> Path:
    root = tmp / "kernel"
    moddir = root / "lib/modules" / KVER
    (moddir / "kernel").mkdir(parents=True)
    (root / "boot").mkdir()
    (root / "boot" / f"vmlinuz-{KVER}").write_bytes(b"not really a kernel")
    (root / "boot" / f"config-{KVER}").write_text(config)
    dep, alias = [], []
    src = tmp / "src"
    src.mkdir()
    for name, (depends, aliases, firmware) in MODULES.items():
        if name in without:
            continue
        fields = [f"name={name}", f"depends={depends}", *(f"alias={a}" for a in aliases),
                  *(f"firmware={f}" for f in firmware), f"vermagic={vermagic} SMP preempt mod_unload"]
        c = src / f"{name}.c"
        c.write_text("".join(f'static const char f{i}[] __attribute__((section(".modinfo"), used, aligned(1))) = '
                             f'"{f}";\n' for i, f in enumerate(fields)))
        subprocess.run(["gcc", "-c", "-o", moddir / "kernel" / f"{name}.ko", c], check=True)
        deps = " ".join(f"kernel/{d}.ko" for d in depends.split(",") if d)
        dep.append(f"kernel/{name}.ko: {deps}".rstrip())
        alias += [f"alias {a} {name}" for a in aliases]
    (moddir / "modules.dep").write_text("\n".join(dep) + "\n")
    (moddir / "modules.alias").write_text("\n".join(alias) + "\n")
    (moddir / "modules.builtin").write_text("")
    return root


def inventory(tmp: Path, kernel: Path, profile: str = 'nic_drivers = { virtio_net = "m" }') -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "inventory.toml"
    nic = 'nic_drivers = { virtio_net = "m" }'
    path.write_text(edit(BASE_INVENTORY, (nic, f'kernel_path = "{kernel}"\n{profile}')))
    return path


def facts(root: Path) -> KernelFacts:
    return KernelFacts.load(local_kernel(root))


def test_a_good_kernel_passes(tmp_path: Path, cli: Callable[..., Result]) -> None:
    root = make_kernel(tmp_path)
    res = cli("kernel", "check", inventory(tmp_path, root), expect=0)
    assert "virtio_ring, virtio, virtio_pci, failover, virtio_net" in res.output
    assert "root file system ext4: jbd2, ext4" in res.output
    assert "kernel check: ok" in res.output


def test_without_aoe(tmp_path: Path, cli: Callable[..., Result]) -> None:
    root = make_kernel(tmp_path, without=("aoe",))
    res = cli("kernel", "check", inventory(tmp_path, root), expect=1)
    assert "AoE: aoe.ko is not in lib/modules/9.9.9-test" in res.output
    assert "CONFIG_ATA_OVER_ETH=m in config-9.9.9-test" in res.output
    assert "      CONFIG_ATA_OVER_ETH=m" in res.output  # the fragment's line that fixes it
    built_in = make_kernel(tmp_path / "y", without=("aoe",), config="CONFIG_ATA_OVER_ETH=y\nCONFIG_BLK_DEV_INITRD=y\n")
    cli("kernel", "check", inventory(tmp_path / "y", built_in), expect=0)


def test_without_the_virtio_transport(tmp_path: Path, cli: Callable[..., Result]) -> None:
    root = make_kernel(tmp_path, without=("virtio_pci",))
    res = cli("kernel", "check", inventory(tmp_path, root), expect=1)
    assert "NIC driver virtio_net: virtio_net drives virtio devices" in res.output
    assert "1af4:1041" in res.output
    assert "      CONFIG_VIRTIO_PCI=m" in res.output


def test_a_missing_dependency_and_a_foreign_vermagic(tmp_path: Path) -> None:
    root = make_kernel(tmp_path / "a", without=("failover",))
    p = load_inventory(inventory(tmp_path / "a", root)).profiles["virtio"]
    (nic,) = [f for f in check_profile(facts(root), p).findings if f.what == "NIC driver virtio_net"]
    assert not nic.ok and nic.problem == "missing module(s): failover"
    root = make_kernel(tmp_path / "b", vermagic="6.1.0-1-amd64")
    report = check_profile(facts(root), p)
    assert not report.ok
    assert all("built for another kernel than 9.9.9-test" in f.problem for f in report.findings if f.modules)
    assert "aoe (vermagic '6.1.0-1-amd64 SMP preempt mod_unload')" in report.errors()[0]


def test_nic_for_in_load_order(tmp_path: Path, cli: Callable[..., Result]) -> None:
    root = make_kernel(tmp_path)
    inv = inventory(tmp_path, root)
    res = cli("kernel", "nic-for", "1af4:1000", inv, expect=0)
    assert res.stdout.split() == ["virtio_ring", "virtio", "virtio_pci", "failover", "virtio_net"]
    assert cli("kernel", "nic-for", "8086:10D3", inv, expect=0).stdout.split() == ["e1000e"]
    res = cli("kernel", "nic-for", "dead:beef", inv, expect=1)
    assert "no module of kernel 9.9.9-test has a pci: alias matching dead:beef" in res.output
    assert "not a PCI id" in cli("kernel", "nic-for", "10d3", inv, expect=2).output
    assert nic_chain(facts(root), PciDevice.parse("1af4:1041"))[0][-1] == "virtio_net"  # modern virtio-net


def test_nic_pci_profile_and_firmware(tmp_path: Path, cli: Callable[..., Result]) -> None:
    root = make_kernel(tmp_path)
    inv = inventory(tmp_path, root, 'nic_pci = ["14e4:1644", "1af4:1000"]')
    p = load_inventory(inv).profiles["virtio"]
    assert p.nic_drivers == () and p.nic_pci == ("14e4:1644", "1af4:1000")
    report = check_profile(facts(root), p)
    assert report.ok
    assert report.pci_nic_modules == ("tg3", "virtio_ring", "virtio", "virtio_pci", "failover", "virtio_net")
    res = cli("kernel", "check", inv, expect=0)
    assert "note: tg3 needs firmware tigon/tg3.bin" in res.output
    res = cli("kernel", "check", inventory(tmp_path / "x", root, 'nic_pci = ["8086:1533"]'), expect=1)
    assert "NIC 8086:1533: no module of kernel 9.9.9-test has a pci: alias matching 8086:1533" in res.output


@pytest.mark.parametrize(("value", "message"), [
    ('["8086-10d3"]', "profiles.virtio.nic_pci[0]: '8086-10d3' is not a PCI id"),
    ('"8086:10d3"', "profiles.virtio.nic_pci: must be a list of PCI ids"),
    ('["8086:10d3", "8086:10D3"]', "profiles.virtio.nic_pci[1]: '8086:10D3' is listed twice"),
])
def test_nic_pci_is_checked_at_load(tmp_path: Path, value: str, message: str, cli: Callable[..., Result]) -> None:
    path = tmp_path / "inventory.toml"
    path.write_text(edit(BASE_INVENTORY, ('nic_drivers = { virtio_net = "m" }', f"nic_pci = {value}")))
    assert message in cli("validate", path, expect=2).output


def test_build_refuses_a_kernel_without_aoe(tmp_path: Path, cli: Callable[..., Result]) -> None:
    root = make_kernel(tmp_path, without=("aoe",))
    out = tmp_path / "out"
    res = cli("build", inventory(tmp_path, root), "--out", out, expect=1)
    assert "CONFIG_ATA_OVER_ETH" in res.output
    assert not out.exists()
    res = cli("validate", inventory(tmp_path, root), expect=1)
    assert "AoE" in res.output
    cli("validate", "--kernels", "skip", inventory(tmp_path, root), expect=0)


def test_the_initrd_compressor_must_be_one_the_kernel_unpacks(tmp_path: Path) -> None:
    root = make_kernel(tmp_path)
    p = load_inventory(inventory(tmp_path, root)).profiles["virtio"]
    ok = check_profile(facts(root), p, compress="gzip")
    assert ok.ok and ok.unpacks == ("gzip",)
    report = check_profile(facts(root), p, compress="zstd")
    (f,) = [f for f in report.findings if not f.ok]
    assert f.what == "initrd (zstd)" and f.problem == "CONFIG_RD_ZSTD not set in config-9.9.9-test"
    assert f.fix == ("CONFIG_RD_ZSTD=y",)


def test_build_refuses_a_compressor_the_kernel_cannot_unpack(tmp_path: Path, cli: Callable[..., Result]) -> None:
    root = make_kernel(tmp_path)  # CONFIG_RD_GZIP only
    out = tmp_path / "out"
    res = cli("build", inventory(tmp_path, root), "--out", out, "--compress", "zstd", expect=1)
    assert "initrd (zstd): CONFIG_RD_ZSTD not set in config-9.9.9-test" in res.output
    assert "      CONFIG_RD_ZSTD=y" in res.output
    assert not out.exists()


def test_validate_leaves_out_a_kernel_that_is_not_here(tmp_path: Path, cli: Callable[..., Result]) -> None:
    res = cli("validate", inventory(tmp_path, tmp_path / "elsewhere"), expect=0)
    assert f"kernel {tmp_path / 'elsewhere'} not checked (not here" in res.output
    res = cli("validate", inventory(tmp_path / "good", make_kernel(tmp_path / "good")), expect=0)
    assert "profile virtio: kernel 9.9.9-test ok" in res.output
