"""Read an initramfs as the kernel unpacks it: cpio "newc" archives (070701/070702), one after another, each
uncompressed (the early microcode part) or compressed (gzip, xz, lzma, bzip2, zstd, lz4 legacy or frame),
with zero padding between them. Pure Python: stdlib gzip/lzma/bz2, zstandard and lz4."""

from __future__ import annotations

import bz2
import io
import lzma
import stat
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import lz4.block
import lz4.frame
import zstandard

from netbootgen.errors import NetbootgenError

NEWC_MAGICS = (b"070701", b"070702")
HEADER_LEN = 110
TRAILER = "TRAILER!!!"
# Compressed archive: (magic, name); first match wins.
COMPRESSIONS = (
    (b"\x1f\x8b", "gzip"), (b"\xfd7zXZ\x00", "xz"), (b"\x5d\x00\x00", "lzma"), (b"BZh", "bzip2"),
    (b"\x28\xb5\x2f\xfd", "zstd"), (b"\x02\x21\x4c\x18", "lz4"), (b"\x04\x22\x4d\x18", "lz4"),
)  # fmt: skip
LZ4_LEGACY_BLOCK = 8 << 20  # lz4 -l: each block holds at most 8 MiB
LZ4_LEGACY_BOUND = LZ4_LEGACY_BLOCK + LZ4_LEGACY_BLOCK // 255 + 16  # LZ4_compressBound


@dataclass(frozen=True)
class Entry:
    name: str  # as stored, without a leading "./" or "/"
    mode: int
    size: int
    data: bytes  # file contents, or a symlink's target
    mtime: int = 0
    nlink: int = 1  # > 1: a hard-linked file; `data` is its data whichever name carried it in the archive

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)

    @property
    def target(self) -> str:
        return self.data.decode("utf-8", "replace") if self.is_symlink else ""


@dataclass(frozen=True)
class Archive:
    """One cpio archive of the image: where it starts, how it was compressed, what it holds."""

    offset: int
    compression: str  # "none" for the uncompressed (early) part
    compressed_size: int
    entries: tuple[Entry, ...]


def _align4(n: int) -> int:
    return (n + 3) & ~3


def parse_newc(data: bytes, start: int = 0) -> tuple[list[Entry], int]:
    """The entries of the newc archive at `start` up to its trailer, and the offset just past the trailer."""
    entries: list[Entry] = []
    links: dict[tuple[int, int, int], list[int]] = {}  # (dev major, minor, inode) -> entries of one file
    pos = start
    while True:
        head = data[pos:pos + HEADER_LEN]
        if len(head) < HEADER_LEN:
            raise NetbootgenError(f"the cpio archive is truncated: it ends inside the header at byte {pos}")
        if head[:6] not in NEWC_MAGICS:
            raise NetbootgenError(f"not a cpio newc header at byte {pos} (found {head[:6]!r})")
        try:
            f = [int(head[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        except ValueError:
            raise NetbootgenError(f"corrupt cpio header at byte {pos}") from None
        ino, mode, nlink, mtime, size, namesize = f[0], f[1], f[4], f[5], f[6], f[11]
        name_end = pos + HEADER_LEN + namesize
        name = data[pos + HEADER_LEN:name_end - 1].decode("utf-8", "surrogateescape")
        body = _align4(name_end)
        if body + size > len(data):
            raise NetbootgenError(f"the cpio archive is truncated: entry {name!r} at byte {pos} runs past its end")
        pos = _align4(body + size)
        if name == TRAILER:
            return _hardlinks(entries, links), pos
        clean = name[2:] if name.startswith("./") else name.lstrip("/")
        if nlink > 1 and stat.S_ISREG(mode):
            links.setdefault((f[7], f[8], ino), []).append(len(entries))
        entries.append(Entry(clean or ".", mode, size, data[body:body + size], mtime, nlink))


def _hardlinks(entries: list[Entry], links: dict[tuple[int, int, int], list[int]]) -> list[Entry]:
    """newc stores a hard-linked file's data once, with one of its names (GNU cpio: the last); the kernel
    writes it through the link, so every name of the file has the data."""
    for group in links.values():
        data = next((entries[i].data for i in reversed(group) if entries[i].size), b"")
        for i in group:
            e = entries[i]
            entries[i] = Entry(e.name, e.mode, len(data), data, e.mtime, e.nlink)
    return entries


def _lz4_legacy(data: bytes) -> tuple[bytes, int]:
    """`lz4 -l` output: magic, then blocks of (LE32 compressed size, LZ4 block) until the data or the
    blocks end (another magic or a size that cannot be a block). Returns the data and the bytes used."""
    out = []
    pos = 4
    while pos + 4 <= len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        if n == 0x184C2102:  # a second lz4 legacy stream follows: the kernel reads it as the same one
            pos += 4
            continue
        if n == 0 or n > LZ4_LEGACY_BOUND or pos + 4 + n > len(data):
            break
        out.append(lz4.block.decompress(data[pos + 4:pos + 4 + n], uncompressed_size=LZ4_LEGACY_BLOCK))
        pos += 4 + n
    return b"".join(out), pos


def decompress(data: bytes, kind: str) -> tuple[bytes, int]:
    """Decompress the stream at the start of `data`; returns the contents and how many bytes it took
    (len(data) when the format cannot tell where it ends)."""
    try:
        if kind == "gzip":
            d = zlib.decompressobj(wbits=31)
            out = d.decompress(data)
            return out, len(data) - len(d.unused_data)
        if kind in ("xz", "lzma"):
            x = lzma.LZMADecompressor(format=lzma.FORMAT_XZ if kind == "xz" else lzma.FORMAT_ALONE)
            out = x.decompress(data)
            return out, len(data) - len(x.unused_data)
        if kind == "bzip2":
            b = bz2.BZ2Decompressor()
            out = b.decompress(data)
            return out, len(data) - len(b.unused_data)
        if kind == "zstd":
            reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
            return reader.read(), len(data)
        if kind == "lz4":
            if data.startswith(b"\x04\x22\x4d\x18"):
                return lz4.frame.decompress(data), len(data)
            return _lz4_legacy(data)
    except (zlib.error, lzma.LZMAError, OSError, EOFError, zstandard.ZstdError, RuntimeError, ValueError) as e:
        raise NetbootgenError(f"cannot decompress the {kind} archive: {e}") from None
    raise NetbootgenError(f"unknown compression {kind!r}")


def compression_of(data: bytes, pos: int = 0) -> str | None:
    for magic, kind in COMPRESSIONS:
        if data.startswith(magic, pos):
            return kind
    return None


def read_initramfs(data: bytes) -> list[Archive]:
    """Every archive of an initramfs image, in order (the kernel unpacks them in this order, later entries
    overwriting earlier ones)."""
    archives = []
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # padding between archives
            pos += 1
            continue
        if data[pos:pos + 6] in NEWC_MAGICS:
            entries, end = parse_newc(data, pos)
            archives.append(Archive(pos, "none", end - pos, tuple(entries)))
            pos = end
            continue
        kind = compression_of(data, pos)
        if kind is None:
            raise NetbootgenError(f"byte {pos}: neither a cpio archive nor a known compression "
                                  f"(found {data[pos:pos + 6]!r})")
        inner, used = decompress(data[pos:], kind)
        entries = []
        at = 0
        while at < len(inner):  # one compressed stream may hold several archives
            if inner[at] == 0:
                at += 1
                continue
            more, at = parse_newc(inner, at)
            entries += more
        archives.append(Archive(pos, kind, used, tuple(entries)))
        pos += used
    if not archives:
        raise NetbootgenError("empty initramfs image")
    return archives


def uncompressed_initramfs(data: bytes) -> bytes:
    """The image with each compressed archive replaced by its contents: the same cpio archives in the same order,
    which the kernel unpacks without decompressing (each starts 4-byte aligned, as the kernel requires); `data`
    itself when nothing in it is compressed."""
    archives = read_initramfs(data)
    if all(a.compression == "none" for a in archives):
        return data
    out = bytearray()
    for a in archives:
        raw = data[a.offset:a.offset + a.compressed_size]
        if a.compression != "none":
            raw, _ = decompress(raw, a.compression)
        out += raw
        out += bytes(-len(out) % 4)
    return bytes(out)


def iter_entries(archives: list[Archive]) -> Iterator[Entry]:
    for a in archives:
        yield from a.entries
