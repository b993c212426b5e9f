"""Copy-on-write storage for an AoE export: reads fall through to a read-only BASE for sectors never
written; writes go to a sparse OVERLAY, and a sector map beside it (`OVERLAY.map`) records exactly which
512-byte sectors the overlay holds.

On-disk format of `OVERLAY.map` (little-endian):

    offset 0     8 bytes   magic b"NBGCOW1\\0"
    offset 8     u64       number of sectors of the export (the BASE window)
    offset 16    ...       zero up to HEADER_SIZE (4096)
    offset 4096  bitmap    one bit per sector: sector i is byte 4096 + i // 8, bit i % 8 (LSB first);
                           1 = the overlay holds sector i, 0 = read it from BASE

The OVERLAY is a sparse file of exactly `sectors * 512` bytes; sector i of the export is at byte i * 512 of
the overlay (whatever the export's offset in BASE). Both files are created together (the map through a
temporary file and a rename, so a map is either complete or absent); an overlay without its map is an error.

Ordering, so that no acknowledged write is lost: the data goes to the overlay first, then the bytes of the map
whose bits changed are written (only on a sector's first write), and only then is the write answered. A
target process that crashes therefore loses nothing the initiator was told is written (the kernel's page
cache holds both). Bits only ever go from 0 to 1, and each one is written after its data, so any subset of
map bytes reaching the disk is consistent. With `sync` both files are opened O_DSYNC, so a write is on
disk before it is answered; FLUSH (and closing the export) fdatasyncs the overlay and then the map. Without
`sync`, as with a plain export, a power loss may lose recent writes (the Linux aoe driver never sends FLUSH):
a sector written for the first time since the last FLUSH may then read as its BASE bytes or as zeros.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from netbootgen.aoe import protocol as p

SECTOR = p.SECTOR_SIZE
MAGIC = b"NBGCOW1\0"
HEADER_SIZE = 4096
_HEADER = struct.Struct("<8sQ")


def map_path(overlay: Path) -> Path:
    """Where the sector map of `overlay` lives."""
    return overlay.with_name(overlay.name + ".map")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create(overlay: Path, sectors: int) -> None:
    """Create an empty sparse overlay and its map (the map last, by rename)."""
    mp = map_path(overlay)
    tmp = mp.with_name(mp.name + ".tmp")
    fd = os.open(overlay, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.ftruncate(fd, sectors * SECTOR)
        os.fsync(fd)
    finally:
        os.close(fd)
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.pwrite(fd, _HEADER.pack(MAGIC, sectors), 0)
        os.ftruncate(fd, HEADER_SIZE + (sectors + 7) // 8)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, mp)
    _fsync_dir(overlay.parent)


class CowOverlay:
    """The overlay and sector map of one copy-on-write export; `base_fd` is the read-only BASE."""

    def __init__(self, overlay: Path, base_fd: int, base_offset: int, sectors: int, *, sync: bool = False) -> None:
        self.path = overlay
        self.map_path = map_path(overlay)
        self.sectors = sectors
        self.base_fd = base_fd
        self.base_offset = base_offset  # bytes
        if not overlay.exists() and not self.map_path.exists():
            if not overlay.parent.is_dir():
                raise ValueError(
                    f"cow overlay {os.fspath(overlay)}: directory {os.fspath(overlay.parent)} does not exist"
                )
            _create(overlay, sectors)
        elif not self.map_path.exists():
            raise ValueError(
                f"cow overlay {os.fspath(overlay)} exists without its sector map {os.fspath(self.map_path)}; "
                "remove the overlay to start afresh"
            )
        elif not overlay.exists():
            raise ValueError(
                f"cow sector map {os.fspath(self.map_path)} exists without its overlay {os.fspath(overlay)}"
            )
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_DSYNC if sync else 0)
        self.fd = os.open(overlay, flags)
        try:
            self.map_fd = os.open(self.map_path, flags)
        except BaseException:
            os.close(self.fd)
            raise
        try:
            self.bitmap = self._load()
        except BaseException:
            self.close()
            raise

    def _load(self) -> bytearray:
        head = os.pread(self.map_fd, _HEADER.size, 0)
        if len(head) < _HEADER.size or head[:8] != MAGIC:
            raise ValueError(f"{os.fspath(self.map_path)} is not a netbootgen cow sector map")
        _, sectors = _HEADER.unpack(head)
        if sectors != self.sectors:
            raise ValueError(
                f"cow overlay {os.fspath(self.path)} was made for {sectors} sectors, the export has {self.sectors}"
            )
        size = os.fstat(self.fd).st_size
        if size != sectors * SECTOR:
            raise ValueError(f"cow overlay {os.fspath(self.path)} is {size} bytes, expected {sectors * SECTOR}")
        nbytes = (sectors + 7) // 8
        bitmap = bytearray(os.pread(self.map_fd, nbytes, HEADER_SIZE))
        if len(bitmap) != nbytes:
            raise ValueError(f"{os.fspath(self.map_path)} is truncated")
        return bitmap

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def close(self) -> None:
        if self.fd >= 0:
            try:
                os.fdatasync(self.fd)
                os.fdatasync(self.map_fd)
            finally:
                os.close(self.fd)
                os.close(self.map_fd)
                self.fd = self.map_fd = -1

    def written(self, sector: int) -> bool:
        return bool(self.bitmap[sector >> 3] >> (sector & 7) & 1)

    def written_sectors(self) -> int:
        return sum(bin(b).count("1") for b in self.bitmap)

    def _runs(self, lba: int, count: int) -> list[tuple[int, int, bool]]:
        """(first, count, in_overlay) runs covering lba..lba+count."""
        runs: list[tuple[int, int, bool]] = []
        start = lba
        state = self.written(lba)
        for s in range(lba + 1, lba + count):
            w = self.written(s)
            if w != state:
                runs.append((start, s - start, state))
                start, state = s, w
        runs.append((start, lba + count - start, state))
        return runs

    def read_into(self, buf: memoryview, lba: int, count: int) -> int:
        got = 0
        for first, n, in_overlay in self._runs(lba, count):
            view = buf[(first - lba) * SECTOR : (first - lba + n) * SECTOR]
            if in_overlay:
                done = os.preadv(self.fd, [view], first * SECTOR)
            else:
                done = os.preadv(self.base_fd, [view], self.base_offset + first * SECTOR)
            got += done
            if done != n * SECTOR:
                break
        return got

    def write_from(self, data: memoryview | bytes, lba: int) -> int:
        done = os.pwrite(self.fd, data, lba * SECTOR)
        if done != len(data):
            return done
        end = lba + done // SECTOR
        lo, hi = lba >> 3, (end - 1) >> 3
        before = bytes(self.bitmap[lo : hi + 1])
        for s in range(lba, end):
            self.bitmap[s >> 3] |= 1 << (s & 7)
        if self.bitmap[lo : hi + 1] != before:
            os.pwrite(self.map_fd, self.bitmap[lo : hi + 1], HEADER_SIZE + lo)
        return done

    def flush(self) -> None:
        os.fdatasync(self.fd)
        os.fdatasync(self.map_fd)
