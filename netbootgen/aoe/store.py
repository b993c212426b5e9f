"""What the AoE target exports: `ExportSpec`/`parse_export_spec` and `OpenExport`, an open file or block
device restricted to the spec's sector window (copy-on-write over a read-only BASE with `cow`: netbootgen/aoe/
cow.py), with the protocol state and counters of that one export."""

from __future__ import annotations

import mmap
import os
import re
import socket
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from netbootgen.aoe import protocol as p
from netbootgen.aoe.backing import storage_of
from netbootgen.aoe.cow import CowOverlay

SECTOR = p.SECTOR_SIZE


@dataclass(frozen=True)
class ExportSpec:
    """One exported window: shelf.slot -> file or block device, offset/length in sectors."""

    shelf: int
    slot: int
    path: Path
    readonly: bool = False
    offset: int = 0
    length: int | None = None
    cow: Path | None = None  # copy-on-write: BASE (path) is only read, writes go to this sparse overlay

    def __post_init__(self) -> None:
        if self.cow is not None and self.readonly:
            raise ValueError("ro and cow exclude each other (cow never writes the base; drop one)")
        if not 0 <= self.shelf <= p.MAX_SHELF:
            raise ValueError(f"shelf {self.shelf} out of range 0-{p.MAX_SHELF}")
        if not 0 <= self.slot <= p.MAX_SLOT:
            raise ValueError(f"slot {self.slot} out of range 0-{p.MAX_SLOT}")
        if self.offset < 0:
            raise ValueError(f"offset {self.offset} must not be negative")
        if self.length is not None and self.length < 1:
            raise ValueError(f"length {self.length} must be at least 1 sector")

    @property
    def name(self) -> str:
        return p.aoe_name(self.shelf, self.slot)


_ADDR_RE = re.compile(r"e?([0-9]+)\.([0-9]+)")  # ASCII digits only (not e.g. '١.٢')


def _parse_count(part: str, key: str, value: str) -> int:
    try:
        if not value.isascii():
            raise ValueError(value)
        n = int(value, 0)
    except ValueError:
        raise ValueError(f"{part!r}: {key} must be an integer number of sectors") from None
    if n < 0:
        raise ValueError(f"{part!r}: {key} must not be negative")
    return n


def parse_export_spec(text: str) -> ExportSpec:
    """Parse 'SHELF.SLOT=PATH[,ro][,offset=N][,length=N][,cow=OVERLAY]' (offset/length in 512-byte sectors)."""
    addr, sep, rest = text.partition("=")
    if not sep:
        raise ValueError(f"{text!r}: expected SHELF.SLOT=PATH[,ro][,offset=N][,length=N][,cow=OVERLAY]")
    m = _ADDR_RE.fullmatch(addr.strip())
    if not m:
        raise ValueError(f"{addr!r} is not a valid SHELF.SLOT address (e.g. 1.2)")
    shelf, slot = int(m.group(1)), int(m.group(2))
    if shelf > p.MAX_SHELF:
        raise ValueError(f"{addr!r}: shelf {shelf} out of range 0-{p.MAX_SHELF}")
    if slot > p.MAX_SLOT:
        raise ValueError(f"{addr!r}: slot {slot} out of range 0-{p.MAX_SLOT}")
    path, *options = rest.split(",")
    if not path:
        raise ValueError(f"{text!r}: missing PATH after '='")
    readonly = False
    offset = 0
    length: int | None = None
    cow: Path | None = None
    seen: set[str] = set()
    for part in options:
        key, has_value, value = part.partition("=")
        key = key.strip()
        if key in seen:
            raise ValueError(f"{part!r}: option {key!r} given twice")
        seen.add(key)
        if key == "ro" and not has_value:
            readonly = True
        elif key == "offset" and has_value:
            offset = _parse_count(part, key, value)
        elif key == "length" and has_value:
            length = _parse_count(part, key, value)
            if length == 0:
                raise ValueError(f"{part!r}: length must be at least 1 sector")
        elif key == "cow" and has_value and value:
            cow = Path(value)
        else:
            raise ValueError(f"unknown export option {part!r} (expected ro, offset=N, length=N or cow=OVERLAY)")
    if cow is not None and readonly:
        raise ValueError(f"{text!r}: ro and cow exclude each other (cow never writes the base; drop one)")
    return ExportSpec(shelf, slot, Path(path), readonly=readonly, offset=offset, length=length, cow=cow)


def _device_bytes(fd: int) -> int:
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode):
        return st.st_size
    if stat.S_ISBLK(st.st_mode):
        return os.lseek(fd, 0, os.SEEK_END)
    raise ValueError("not a regular file or block device")


def _open_storage(path: Path, flags: int) -> int:
    """Open a regular file or block device; anything else (a FIFO would block in open) is a ValueError."""
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a special file"
            raise ValueError(f"{os.fspath(path)} is {kind}, not a regular file or block device")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


class OpenExport:
    """An open backing file/device restricted to the spec's sector window.

    State the AoE protocol keeps per target (config string, MAC mask list, reservations) lives
    here too, so that several exports in one process behave like several vblades.
    """

    def __init__(
        self,
        spec: ExportSpec,
        *,
        sync: bool = False,
        direct: bool = False,
        hostname: str | None = None,
        bufcnt: int | None = None,
        mac_allow: Iterable[bytes] = (),
    ) -> None:
        if bufcnt is not None and not 2 <= bufcnt <= 0xFFFF:
            raise ValueError(f"bufcnt {bufcnt} out of range 2-65535 (Linux sends nothing below 2)")
        allow = list(dict.fromkeys(bytes(m) for m in mac_allow))
        if any(len(m) != 6 for m in allow):
            raise ValueError("allowed MACs must be 6 bytes")
        self.spec = spec
        self.shelf = spec.shelf
        self.slot = spec.slot
        self.name = spec.name
        self.readonly = spec.readonly
        self.sync = sync
        self.direct = direct
        self.bufcnt = bufcnt  # advertised in config replies; None: the target's
        if spec.cow is not None and direct:
            raise ValueError("O_DIRECT (--direct) is not supported on a cow export")
        flags = (os.O_RDONLY if spec.readonly or spec.cow is not None else os.O_RDWR) | os.O_CLOEXEC
        if sync and spec.cow is None:
            flags |= os.O_SYNC
        if direct:
            flags |= os.O_DIRECT
        self.fd = _open_storage(spec.path, flags)
        try:
            total = _device_bytes(self.fd) // SECTOR
            if spec.offset >= total:
                raise ValueError(
                    f"offset {spec.offset} is beyond the end of {os.fspath(spec.path)} ({total} sectors)"
                )
            avail = total - spec.offset
            if spec.length is not None and spec.length > avail:
                raise ValueError(
                    f"offset {spec.offset} + length {spec.length} exceeds the size of "
                    f"{os.fspath(spec.path)} ({total} sectors)"
                )
            self.sectors: int = spec.length if spec.length is not None else avail
            self.base = spec.offset * SECTOR
            self.cow = (
                CowOverlay(spec.cow, self.fd, self.base, self.sectors, sync=sync) if spec.cow is not None else None
            )
        except BaseException:
            os.close(self.fd)
            raise
        # The storage whose bytes a write changes (the overlay of a cow export), and the one reads may come from
        # (files and block devices followed to what they store on: netbootgen.aoe.backing), with the byte of
        # that storage where fd's byte 0 lies.
        self.source_id, self.origin = storage_of(self.fd)
        if self.cow is not None:
            self.device_id = storage_of(self.cow.fd)[0]
        else:
            self.device_id = self.source_id
        # Plain I/O: one pread/pwrite on fd at base (the C hot path may answer it); not O_DIRECT, not cow.
        self.plain = not direct and self.cow is None
        # O_DIRECT needs aligned buffers: bounce through a page-aligned anonymous mapping.
        self._bounce: mmap.mmap | None = mmap.mmap(-1, p.MAX_SCNT * SECTOR) if direct else None
        self._bounce_mv = memoryview(self._bounce) if self._bounce is not None else None
        self.identify = p.build_identify(
            self.sectors, serial=p.make_serial(spec.shelf, spec.slot, hostname or socket.gethostname())
        )
        # Protocol state.
        self.config = b""
        # Initiator MACs allowed (empty: everybody). Unlike an edit through the mask command, the initial
        # list may exceed MAX_MASKS (an inventory export shared by many machines).
        self.masks: list[bytes] = allow
        self.reservations: list[bytes] = []
        # Counters.
        self.frames = 0
        self.bytes_read = 0
        self.bytes_written = 0
        self.errors = 0
        self.denied = 0  # frames from initiators not on the allow-list (ignored)
        self.broadcast = 0  # ATA requests sent to the broadcast address (answered, as by vblade)

    def __repr__(self) -> str:
        cow = f", cow={os.fspath(self.spec.cow)}" if self.spec.cow is not None else ""
        return f"OpenExport({self.name} -> {os.fspath(self.spec.path)}{cow}, {self.sectors} sectors)"

    def __enter__(self) -> OpenExport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def close(self) -> None:
        if self.cow is not None:
            self.cow.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self._bounce_mv is not None:
            self._bounce_mv.release()
            self._bounce_mv = None
        if self._bounce is not None:
            self._bounce.close()
            self._bounce = None

    def overlaps(self, other: OpenExport) -> bool:
        """True if both windows share sectors of the same file or device (a cow export's overlay, or its
        BASE when the other export writes there)."""
        if self.cow is not None and other.cow is None and self.source_id == other.device_id:
            return not other.readonly and self._window_overlaps(other)
        if other.cow is not None and self.cow is None and other.source_id == self.device_id:
            return not self.readonly and self._window_overlaps(other)
        if self.device_id != other.device_id:
            return False
        if self.cow is not None or other.cow is not None:
            return True  # one overlay file serves one export
        return self._window_overlaps(other)

    def _window_overlaps(self, other: OpenExport) -> bool:
        a0 = self.origin + self.base
        b0 = other.origin + other.base
        a1, b1 = a0 + self.sectors * SECTOR, b0 + other.sectors * SECTOR
        return a0 < b1 and b0 < a1

    def read_into(self, buf: memoryview, lba: int, count: int) -> int:
        """Read `count` sectors at window-relative `lba` into buf; returns bytes read.

        The caller checks the range; an out-of-window request raises ValueError.
        """
        if lba < 0 or count < 0 or lba + count > self.sectors:
            raise ValueError(f"{self.name}: sectors {lba}+{count} outside 0-{self.sectors}")
        n = count * SECTOR
        if self.cow is not None:
            return self.cow.read_into(buf[:n], lba, count)
        if self._bounce_mv is None:
            return os.preadv(self.fd, [buf[:n]], self.base + lba * SECTOR)
        got = os.preadv(self.fd, [self._bounce_mv[:n]], self.base + lba * SECTOR)
        buf[:got] = self._bounce_mv[:got]
        return got

    def write_from(self, data: memoryview | bytes, lba: int) -> int:
        """Write whole sectors from data at window-relative `lba`; returns bytes written."""
        n = len(data)
        if n % SECTOR or lba < 0 or lba + n // SECTOR > self.sectors:
            raise ValueError(f"{self.name}: write of {n} bytes at {lba} outside 0-{self.sectors}")
        if self.cow is not None:
            return self.cow.write_from(data, lba)
        if self._bounce_mv is None:
            return os.pwrite(self.fd, data, self.base + lba * SECTOR)
        self._bounce_mv[:n] = data
        return os.pwrite(self.fd, self._bounce_mv[:n], self.base + lba * SECTOR)

    def flush(self) -> None:
        if self.cow is not None:
            self.cow.flush()
            return
        os.fsync(self.fd)

    def counters(self) -> dict[str, int]:
        return {
            "frames": self.frames,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "errors": self.errors,
            "denied": self.denied,
            "broadcast": self.broadcast,
        }

    def format_counters(self) -> str:
        return f"{self.name}: " + " ".join(f"{k}={v}" for k, v in self.counters().items())
