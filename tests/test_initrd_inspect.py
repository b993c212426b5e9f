"""initrd inspect on images made here with cpio and the compressors' command-line tools: an early uncompressed
archive followed by a compressed one (gzip, xz, zstd, lz4 legacy as dracut writes it, bzip2), a kernel module
made with gcc, 95aoe files and etc/cmdline.d; and the problems it reports."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from netbootgen.errors import NetbootgenError
from netbootgen.kernel.check import Finding, ProfileReport
from netbootgen.modules.cpio import read_initramfs
from netbootgen.modules.inspect import check_against, inspect_initrd

KVER = "9.9.9-test"
COMPRESSORS = {"gzip": ["gzip", "-c"], "xz": ["xz", "-c", "--check=crc32"], "zstd": ["zstd", "-q", "-c"],
               "lz4": ["lz4", "-l", "-c"], "bzip2": ["bzip2", "-c"]}
pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in ("gcc", "cpio")), reason="gcc or cpio missing")


def ko(tmp: Path, name: str, depends: str = "", kver: str = KVER) -> bytes:
    src = tmp / f"{name}.c"
    fields = [f"name={name}", f"depends={depends}", f"vermagic={kver} SMP preempt mod_unload modversions "]
    src.write_text("".join(f'static const char f{i}[] __attribute__((section(".modinfo"), used, aligned(1))) = '
                           f'"{f}";\n' for i, f in enumerate(fields)))
    subprocess.run(["gcc", "-c", "-o", tmp / f"{name}.ko", src], check=True)
    return (tmp / f"{name}.ko").read_bytes()


def cpio(root: Path) -> bytes:
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    return subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input="\n".join(names).encode(),
                          capture_output=True, check=True).stdout


def make_initrd(tmp: Path, compression: str = "gzip", *, modules: dict[str, bytes] | None = None,
                aoe_hook: bool = True) -> Path:
    early = tmp / "early"
    (early / "kernel/x86/microcode").mkdir(parents=True)
    (early / "kernel/x86/microcode/GenuineIntel.bin").write_bytes(b"\x01" * 100)
    main = tmp / "main"
    moddir = main / "usr/lib/modules" / KVER
    (moddir / "kernel").mkdir(parents=True)
    mods = modules if modules is not None else {"aoe": ko(tmp, "aoe"), "jbd2": ko(tmp, "jbd2"),
                                                "ext4": ko(tmp, "ext4", "jbd2")}
    for name, data in mods.items():
        (moddir / "kernel" / f"{name}.ko").write_bytes(data)
    (moddir / "modules.builtin").write_text("kernel/drivers/virtio/virtio.ko\n")
    (main / "usr/lib/dracut").mkdir(parents=True, exist_ok=True)
    (main / "usr/lib/dracut/modules.txt").write_text("aoe\nbase\n")
    (main / "usr/lib/dracut/build-parameter.txt").write_text(" --kver '9.9.9-test'\n")
    hooks = main / "usr/lib/dracut/hooks/cmdline"
    hooks.mkdir(parents=True)
    if aoe_hook:
        (hooks / "90-parse-aoeroot.sh").write_text("#!/bin/sh\n")
    (main / "usr/lib/aoe-lib.sh").write_text("aoe_parse() { :; }\n")
    (main / "etc/cmdline.d").mkdir(parents=True)
    (main / "etc/cmdline.d/90aoe.conf").write_text("root=aoe:e0.1 rd.aoe.timeout=30\n")
    (main / "init").symlink_to("usr/lib/systemd/systemd")
    packed = subprocess.run(COMPRESSORS[compression], input=cpio(main), capture_output=True, check=True).stdout
    image = tmp / "initrd.img"
    image.write_bytes(cpio(early) + b"\0" * 512 + packed)
    return image


@pytest.mark.parametrize("compression", list(COMPRESSORS))
def test_early_and_compressed_archives(tmp_path: Path, compression: str) -> None:
    if shutil.which(COMPRESSORS[compression][0]) is None:
        pytest.skip(f"{COMPRESSORS[compression][0]} not found")
    r = inspect_initrd(make_initrd(tmp_path, compression))
    assert [(a[1], a[3]) for a in r.archives] == [("none", 4), (compression, r.archives[1][3])]
    assert r.archives[1][0] > 0
    assert r.kernel == KVER
    assert r.dracut_modules == ["aoe", "base"]
    assert r.dracut_args == "--kver '9.9.9-test'"
    assert sorted(r.modules) == ["aoe", "ext4", "jbd2"]
    assert r.modules["ext4"].depends == ("jbd2",) and r.modules["aoe"].release == KVER
    assert r.builtin == {"virtio"}
    assert r.aoe_files == ["usr/lib/aoe-lib.sh", "usr/lib/dracut/hooks/cmdline/90-parse-aoeroot.sh"]
    assert r.cmdline == {"etc/cmdline.d/90aoe.conf": "root=aoe:e0.1 rd.aoe.timeout=30"}
    assert r.files["init"].target == "usr/lib/systemd/systemd"
    assert r.files["kernel/x86/microcode/GenuineIntel.bin"].data == b"\x01" * 100
    assert r.problems == []


def test_problems_are_named(tmp_path: Path, cli: Callable[..., Result]) -> None:
    mods = {"ext4": ko(tmp_path, "ext4", "jbd2"), "old": ko(tmp_path, "old", kver="6.1.0-1-amd64")}
    image = make_initrd(tmp_path, modules=mods, aoe_hook=False)
    res = cli("initrd", "inspect", image, expect=1)
    assert "95aoe: no file matching" in res.output and "parse-aoeroot" in res.output
    assert "AoE: no aoe.ko, and aoe is not built into the kernel" in res.output
    assert "ext4 depends on jbd2, which the initrd lacks" in res.output
    assert "usr/lib/modules/9.9.9-test/kernel/old.ko: vermagic '6.1.0-1-amd64 SMP" in res.output


def test_cli_json(tmp_path: Path, cli: Callable[..., Result]) -> None:
    res = cli("initrd", "inspect", "--json", make_initrd(tmp_path), expect=0)
    report = json.loads(res.stdout)
    assert report["ok"] and report["kernel"] == KVER
    assert [m["name"] for m in report["kernel_modules"]] == ["aoe", "ext4", "jbd2"]
    assert report["archives"][0]["compression"] == "none"
    text = cli("initrd", "inspect", make_initrd(tmp_path / "again"), expect=0).output
    assert "ext4                     9.9.9-test SMP preempt mod_unload modversions  depends: jbd2" in text
    assert "etc/cmdline.d/90aoe.conf: root=aoe:e0.1 rd.aoe.timeout=30" in text


def test_garbage_is_a_clear_error(tmp_path: Path, cli: Callable[..., Result]) -> None:
    bad = tmp_path / "bad.img"
    bad.write_bytes(b"this is not an initrd")
    assert "neither a cpio archive nor a known compression" in cli("initrd", "inspect", bad, expect=1).output
    image = make_initrd(tmp_path).read_bytes()
    for cut in (400, 600):  # inside a header, inside a file
        with pytest.raises(NetbootgenError, match="the cpio archive is truncated"):
            read_initramfs(image[:cut])


def test_hard_links_share_their_data(tmp_path: Path) -> None:
    """GNU cpio stores a hard-linked file's data with its last name only; the kernel writes it through the link."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "a").write_text("shared\n")
    (root / "b").hardlink_to(root / "a")
    files = {e.name: e for e in read_initramfs(cpio(root))[0].entries}
    stored = subprocess.run(["cpio", "-t", "-v", "--quiet"], input=cpio(root), capture_output=True, check=True)
    assert b" 0 " in stored.stdout  # one of the names really has no data in the archive
    assert files["a"].data == files["b"].data == b"shared\n"
    assert files["a"].nlink == files["b"].nlink == 2


def test_checked_against_a_kernel_check(tmp_path: Path) -> None:
    if shutil.which("zstd") is None:
        pytest.skip("zstd not found")
    r = inspect_initrd(make_initrd(tmp_path, "zstd"))
    nic = Finding("NIC driver e1000e", True, ("e1000e",))
    fs = Finding("root file system ext4", True, ("jbd2", "ext4", "crc16"), builtin=("crc16",))
    found = check_against(r, ProfileReport("p", "6.1.0-57-amd64", (nic, fs), unpacks=("gzip", "xz")))
    assert found == ["the initrd's modules are for kernel 9.9.9-test, profile p boots 6.1.0-57-amd64",
                     "kernel 6.1.0-57-amd64 cannot unpack a zstd initrd (see CONFIG_RD_* in its config)",
                     "profile p: NIC driver e1000e needs e1000e, which the initrd lacks"]
    assert r.problems == found
