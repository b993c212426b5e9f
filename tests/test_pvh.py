"""netbootgen.emulate.pvh on bzImages made here: a small x86-64 executable linked with gcc, with and without the
Xen PVH entry note, compressed as the kernel's build does, behind a boot-protocol setup header."""

from __future__ import annotations

import gzip
import lzma
import os
import struct
import subprocess
from pathlib import Path

import pytest
import zstandard

from netbootgen.emulate.pvh import KEEP, bzimage_payload, has_pvh_entry, pvh_kernel, vmlinux_of
from netbootgen.emulate.qemu import QemuSpec, boot_kernel, qemu_argv
from netbootgen.errors import NetbootgenError

# What the kernel's arch/x86/platform/pvh/head.S puts in its notes: name "Xen", type 18, the 32-bit entry.
PVH_NOTE = """
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4, 4, 18
    .asciz "Xen"
    .balign 4
    .long 0x1000000
    .balign 4
    .popsection
"""
ENTRY = """
    .text
    .globl _start
_start:
    hlt
"""
COMPRESSORS = {"xz": lzma.compress, "gzip": gzip.compress, "zstd": lambda b: zstandard.ZstdCompressor().compress(b)}


def link(tmp: Path, name: str, note: bool) -> bytes:
    src = tmp / f"{name}.s"
    src.write_text(ENTRY + (PVH_NOTE if note else ""))
    exe = tmp / name
    subprocess.run(["gcc", "-nostdlib", "-static", "-no-pie", "-o", exe, src], check=True)
    return exe.read_bytes()


def bzimage(payload: bytes, *, version: int = 0x20F, setup_sects: int = 3, offset: int = 0x1000) -> bytes:
    """A setup header (boot protocol `version`) and `payload` where payload_offset/length say it is."""
    head = bytearray((setup_sects + 1) * 512)
    head[0x1F1] = setup_sects
    head[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", head, 0x206, version)
    struct.pack_into("<II", head, 0x248, offset, len(payload))
    decompressor = b"\xcc" * offset
    return bytes(head) + decompressor + payload + struct.pack("<I", 0x12345)  # the kernel's size word follows


@pytest.fixture(scope="module")
def elves(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("elf")
    return {"pvh": link(tmp, "pvh", True), "plain": link(tmp, "plain", False)}


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_vmlinux_comes_out_of_each_compressor(elves: dict[str, bytes], kind: str) -> None:
    image = bzimage(COMPRESSORS[kind](elves["pvh"]))
    assert bzimage_payload(image)[0] == kind
    assert vmlinux_of(image) == elves["pvh"]


def test_pvh_note_is_recognised(elves: dict[str, bytes]) -> None:
    assert has_pvh_entry(elves["pvh"])
    assert not has_pvh_entry(elves["plain"])
    assert not has_pvh_entry(b"\x7fELF not really")


def test_pvh_kernel_is_extracted_once(tmp_path: Path, elves: dict[str, bytes]) -> None:
    vmlinuz = tmp_path / "vmlinuz"
    vmlinuz.write_bytes(bzimage(lzma.compress(elves["pvh"])))
    cache = tmp_path / "cache"
    out = pvh_kernel(vmlinuz, cache)
    assert out is not None and out.parent == cache / "kernels" / "pvh"
    assert out.read_bytes() == elves["pvh"]
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary file left
    out.write_bytes(b"kept")  # the second call reads the cache, it does not extract again
    assert pvh_kernel(vmlinuz, cache) == out and out.read_bytes() == b"kept"


def test_cache_keeps_the_last_used_kernels(tmp_path: Path, elves: dict[str, bytes]) -> None:
    cache = tmp_path / "cache"
    made = []
    for i in range(KEEP + 1):  # KEEP + 1 kernels, each a different bzImage (the digest is the key)
        vmlinuz = tmp_path / f"vmlinuz-{i}"
        vmlinuz.write_bytes(bzimage(lzma.compress(elves["pvh"]), offset=0x1000 + 16 * i))
        made.append(pvh_kernel(vmlinuz, cache))
        if i == 0:
            first = vmlinuz
        else:
            os.utime(made[i], (1000 + i, 1000 + i))
    os.utime(made[0], (0, 0))
    assert pvh_kernel(first, cache) == made[0]  # used again: it is the newest now
    vmlinuz = tmp_path / "vmlinuz-new"
    vmlinuz.write_bytes(bzimage(lzma.compress(elves["pvh"]), offset=0x2000))
    newest = pvh_kernel(vmlinuz, cache)
    left = sorted(p.name for p in (cache / "kernels" / "pvh").iterdir())
    assert len(left) == KEEP and newest is not None and newest.name in left and made[0].name in left
    assert made[1].name not in left  # the least recently used went


def test_kernel_without_pvh_entry_boots_as_bzimage(tmp_path: Path, elves: dict[str, bytes]) -> None:
    vmlinuz = tmp_path / "vmlinuz"
    vmlinuz.write_bytes(bzimage(gzip.compress(elves["plain"])))
    cache = tmp_path / "cache"
    assert pvh_kernel(vmlinuz, cache) is None
    assert [p.name for p in (cache / "kernels" / "pvh").iterdir()][0].endswith(".none")  # remembered
    assert boot_kernel(vmlinuz, cache) == vmlinuz


def test_boot_kernel_under_seabios_and_ovmf(tmp_path: Path, elves: dict[str, bytes]) -> None:
    vmlinuz = tmp_path / "vmlinuz"
    vmlinuz.write_bytes(bzimage(zstandard.ZstdCompressor().compress(elves["pvh"])))
    cache = tmp_path / "cache"
    assert boot_kernel(vmlinuz, cache, "uefi") == vmlinuz  # OVMF boots the bzImage's EFI stub
    elf = boot_kernel(vmlinuz, cache, "bios")
    assert elf != vmlinuz and elf.read_bytes() == elves["pvh"]
    argv = qemu_argv(QemuSpec(Path("/usr/bin/qemu-system-x86_64"), kernel=elf, initrd=Path("/i"), append="x"))
    assert argv[argv.index("-kernel") + 1] == str(elf)


@pytest.mark.parametrize(
    ("image", "message"),
    [(b"MZ" + bytes(0x300), "no 'HdrS' setup header"),
     (bzimage(b"x" * 64, version=0x207), "boot protocol 2.07 has no payload fields"),
     (bzimage(b"\x00\x01\x02\x03" * 16), "not a compressor the kernel uses"),
     (bzimage(b"x" * 64)[:0x1100], "lies outside the file")],
)  # fmt: skip
def test_not_a_usable_bzimage(tmp_path: Path, image: bytes, message: str) -> None:
    with pytest.raises(NetbootgenError, match=message):
        vmlinux_of(image)
    vmlinuz = tmp_path / "vmlinuz"
    vmlinuz.write_bytes(image)
    assert pvh_kernel(vmlinuz, tmp_path / "cache") is None  # such a kernel is booted as it is
