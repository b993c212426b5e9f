"""The uncompressed kernel inside a bzImage, for QEMU to boot through its PVH entry point.

A bzImage carries the kernel as a compressed ELF (`vmlinux`, xz for Debian) behind a small decompressor. Under TCG
that decompressor takes 5-6 s of every direct boot (Debian's 6.1 kernel: QEMU start to the first kernel line 6.2 s
against 0.6 s). QEMU boots an ELF `vmlinux` directly when it has the Xen PVH entry note
(XEN_ELFNOTE_PHYS32_ENTRY, CONFIG_PVH=y), with `-initrd` and `-append` as usual, so a direct boot can skip the
decompressor. The ELF is read from the bzImage's own payload (the setup header's payload_offset/length), checked
with pyelftools, and kept in the cache under the bzImage's digest."""

from __future__ import annotations

import io
import struct
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from netbootgen.cache import KEY
from netbootgen.emulate.derived import derived
from netbootgen.errors import NetbootgenError
from netbootgen.modules.cpio import compression_of, decompress

HDRS_OFFSET = 0x202  # "HdrS": the boot protocol's setup header
SETUP_SECTS_OFFSET = 0x1F1
PAYLOAD_OFFSET = 0x248  # u32 payload_offset, u32 payload_length (boot protocol 2.08+)
XEN_NOTE_NAME = "Xen"
XEN_ELFNOTE_PHYS32_ENTRY = 18
KEEP = 3  # extracted kernels kept in the cache (66 MB each for Debian's 6.1), the most recently used


def bzimage_payload(data: bytes) -> tuple[str, bytes]:
    """The compressor and the compressed kernel of a bzImage (boot protocol >= 2.08)."""
    if len(data) < PAYLOAD_OFFSET + 8 or data[HDRS_OFFSET:HDRS_OFFSET + 4] != b"HdrS":
        raise NetbootgenError("not a bzImage: no 'HdrS' setup header at 0x202")
    (version,) = struct.unpack_from("<H", data, HDRS_OFFSET + 4)
    if version < 0x208:
        raise NetbootgenError(f"bzImage boot protocol {version >> 8}.{version & 0xFF:02d} has no payload fields")
    setup_sects = data[SETUP_SECTS_OFFSET] or 4
    offset, length = struct.unpack_from("<II", data, PAYLOAD_OFFSET)
    start = (setup_sects + 1) * 512 + offset
    if length == 0 or start + length > len(data):
        raise NetbootgenError(f"bzImage payload ({length} bytes at {start}) lies outside the file ({len(data)} bytes)")
    payload = data[start:start + length]
    kind = compression_of(payload)
    if kind is None:
        raise NetbootgenError(f"bzImage payload starts with {payload[:4].hex()}: not a compressor the kernel uses")
    return kind, payload


def has_pvh_entry(elf: bytes) -> bool:
    """Whether `elf` is an x86-64 executable with the PVH entry note QEMU boots it through."""
    try:
        f = ELFFile(io.BytesIO(elf))
        if f.header["e_machine"] != "EM_X86_64" or f.header["e_type"] != "ET_EXEC":
            return False
        for seg in f.iter_segments():
            if seg["p_type"] != "PT_NOTE":
                continue
            for note in seg.iter_notes():
                # pyelftools names no Xen note types: 18 stays a number
                if note["n_name"] == XEN_NOTE_NAME and note["n_type"] == XEN_ELFNOTE_PHYS32_ENTRY:
                    return True
    except (ELFError, struct.error, ValueError):
        return False
    return False


def vmlinux_of(bzimage: bytes) -> bytes:
    """The ELF kernel a bzImage decompresses to."""
    kind, payload = bzimage_payload(bzimage)
    elf, _ = decompress(payload, kind)
    if not elf.startswith(b"\x7fELF"):
        raise NetbootgenError(f"bzImage's {kind} payload is not an ELF file")
    return elf


def _pvh_elf(data: bytes) -> bytes | None:
    try:
        elf = vmlinux_of(data)
    except NetbootgenError:
        return None
    return elf if has_pvh_entry(elf) else None


def pvh_kernel(vmlinuz: Path, cache: Path) -> Path | None:
    """The PVH-bootable ELF of `vmlinuz`, extracted once into `cache`/kernels/pvh (keyed by the bzImage's
    digest; the KEEP most recently used are kept); None when the kernel has no PVH entry (built without
    CONFIG_PVH) or is not a bzImage."""
    return derived(vmlinuz, cache / "kernels" / "pvh", f"vmlinux-{KEY}", _pvh_elf, KEEP)
