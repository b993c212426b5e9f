"""initrd inspect agrees with dracut's lsinitrd (and kmod's modinfo) on the systemd and shell-only initrds
netbootgen builds from the example inventory (cached by netbootgen.build, as boot-test uses them). No QEMU."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from netbootgen.build import build
from netbootgen.cache import cache_dir
from netbootgen.inventory import example_text, load_inventory
from netbootgen.kernel.check import KernelFacts, check_profile
from netbootgen.kernel.fetch import profile_kernel
from netbootgen.modules.inspect import InitrdReport, check_against, inspect_initrd


@pytest.fixture(scope="module", params=["systemd", "shell"])
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, InitrdReport]:
    inv = load_inventory(None)
    out = tmp_path_factory.mktemp(f"build-{request.param}")
    result = build(inv, out, cache_dir(), systemd=request.param == "systemd")
    (profile,) = result.profiles.values()
    return profile.initrd.path, inspect_initrd(profile.initrd.path)


def lsinitrd(*args: str | os.PathLike[str], cwd: Path | None = None) -> str:
    return subprocess.run(["lsinitrd", *map(os.fspath, args)], capture_output=True, check=True, cwd=cwd,
                          text=True, errors="replace").stdout


def listing(image: Path) -> dict[str, tuple[str, int | None, str]]:
    """lsinitrd's `ls -l` listing: name -> (type letter, size of a regular file, symlink target)."""
    sections = lsinitrd(image).split("=" * 72 + "\n")
    found = {}
    for line in sections[2].splitlines():
        kind = line[:1]
        parts = line.split(None, 9 if kind in "cb" else 8)
        name, _, target = parts[-1].partition(" -> ")
        found[name] = (kind, int(parts[4]) if kind == "-" else None, target)
    return found


def test_files_agree_with_lsinitrd(built: tuple[Path, InitrdReport]) -> None:
    image, r = built
    ours = {}
    for name, e in r.files.items():
        kind = "d" if e.is_dir else "l" if e.is_symlink else "-" if e.is_file else "c"
        ours[name] = (kind, e.size if e.is_file else None, e.target)
    theirs = listing(image)
    assert len(theirs) > 200
    for name, e in r.files.items():  # cpio -t shows a hard link's size as stored: 0 where another name has the data
        if e.nlink > 1 and theirs.get(name, ("-", None, ""))[1] == 0:
            ours[name] = ("-", 0, "")
    assert ours == theirs


def test_contents_and_modules_agree(built: tuple[Path, InitrdReport], tmp_path: Path) -> None:
    """Every file's bytes equal what lsinitrd --unpack writes; vermagic equals kmod modinfo's."""
    image, r = built
    lsinitrd("--unpack", image, cwd=tmp_path)
    for name, e in r.files.items():
        if e.is_file:
            assert hashlib.sha256((tmp_path / name).read_bytes()).digest() == hashlib.sha256(e.data).digest(), name
    assert {"aoe", "virtio_net", "virtio_pci", "ext4"} <= set(r.modules)
    for m in r.modules.values():
        kmod = subprocess.run(["modinfo", "-F", "vermagic", tmp_path / m.path], capture_output=True, text=True,
                              check=True).stdout.strip()
        assert m.vermagic.strip() == kmod


def test_dracut_modules_and_verdict(built: tuple[Path, InitrdReport]) -> None:
    image, r = built
    text = lsinitrd("-m", image)
    mods = text.split("dracut modules:\n", 1)[1].split("=" * 72)[0].split()
    assert r.dracut_modules == mods
    assert "aoe" in mods and ("systemd" in mods) == ("systemd" in image.name)
    assert r.problems == []
    inv = load_inventory(None)
    p = next(iter(inv.profiles.values()))
    assert check_against(r, check_profile(KernelFacts.load(profile_kernel(p, cache_dir())), p)) == []


def test_nic_named_by_pci_id_reaches_the_initrd(tmp_path: Path) -> None:
    """profiles.*.nic_pci = ["1af4:1000"] and no nic_drivers: the kernel's aliases give virtio_pci and
    virtio_net, and build puts them into the initrd (--drivers)."""
    text = example_text()
    assert 'nic_drivers = { virtio_net = "m" }' in text
    path = tmp_path / "netboot.toml"
    path.write_text(text.replace('nic_drivers = { virtio_net = "m" }', 'nic_pci = ["1af4:1000"]'))
    inv = load_inventory(path)
    (p,) = inv.profiles.values()
    assert p.nic_drivers == ()
    result = build(inv, tmp_path / "out", cache_dir(), systemd=False)
    (profile,) = result.profiles.values()
    assert profile.check.pci_nic_modules[-2:] == ("net_failover", "virtio_net")
    r = inspect_initrd(profile.initrd.path)
    assert {"virtio_pci", "virtio_net", "aoe", "ext4"} <= set(r.modules)
    assert check_against(r, profile.check) == [] and r.problems == []


def test_only_the_fleets_fsck_helpers_and_the_default_compressor(built: tuple[Path, InitrdReport]) -> None:
    """An ext4 fleet's initrd carries e2fsck, not the build host's xfs tools (dracut --fscks from the fstypes),
    and is zstd-compressed (netbootgen's default)."""
    _, r = built
    names = {n.rsplit("/", 1)[-1] for n in r.files}
    assert {"e2fsck", "fsck.ext4"} <= names
    assert not names & {"xfs_repair", "xfs_db", "fsck.xfs"}
    assert "--fscks 'e2fsck fsck.ext4'" in r.dracut_args
    assert r.archives[-1][1] == "zstd"


def test_lean_shell_and_no_loginctl(built: tuple[Path, InitrdReport]) -> None:
    """/bin/sh is dash (dracut's dash module), not bash; udev-rules' 71-seat.rules finds loginctl as a link to
    true, so the shell-only initrd carries neither libsystemd-shared nor libgcrypt (5 MB unpacked)."""
    image, r = built
    files = r.files
    assert files["usr/bin/sh"].target == "dash" and files["usr/bin/dash"].is_file
    assert not any(n.rsplit("/", 1)[-1] == "bash" for n in files)
    assert files["usr/bin/loginctl"].is_symlink and files["usr/bin/loginctl"].target.endswith("true")
    heavy = {n for n in files if "libsystemd-shared" in n or "libgcrypt" in n}
    assert bool(heavy) == ("systemd" in r.dracut_modules), heavy
