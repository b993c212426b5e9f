"""AoE target logic: exported block windows and the request -> reply state machine.

`Target.feed(frame, send)` is the transport-facing hot path: it calls `send(reply)` for every reply
frame, where `reply` is a memoryview into a buffer owned by the target that is only valid during
the call.  `Target.handle(frame)` is the convenience form returning the replies as bytes.
"""

from __future__ import annotations

import mmap
import os
import re
import socket
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netbootgen.aoe import protocol as p

SECTOR = p.SECTOR_SIZE
SendFn = Callable[[memoryview], Any]

_HDR = p.HEADER
_ATA = p.ATA_ARGS
_ZERO_PAD = bytes(p.MIN_FRAME_LEN)
_RW_COMMANDS = frozenset(
    int(c)
    for c in (
        p.AtaCommand.READ_SECTORS,
        p.AtaCommand.READ_SECTORS_EXT,
        p.AtaCommand.WRITE_SECTORS,
        p.AtaCommand.WRITE_SECTORS_EXT,
    )
)


@dataclass(frozen=True)
class ExportSpec:
    """One exported window: shelf.slot -> file or block device, offset/length in sectors."""

    shelf: int
    slot: int
    path: Path
    readonly: bool = False
    offset: int = 0
    length: int | None = None

    def __post_init__(self) -> None:
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


_ADDR_RE = re.compile(r"e?(\d+)\.(\d+)")


def _parse_count(part: str, key: str, value: str) -> int:
    try:
        n = int(value, 0)
    except ValueError:
        raise ValueError(f"{part!r}: {key} must be an integer number of sectors") from None
    if n < 0:
        raise ValueError(f"{part!r}: {key} must not be negative")
    return n


def parse_export_spec(text: str) -> ExportSpec:
    """Parse 'SHELF.SLOT=PATH[,ro][,offset=N][,length=N]' (offset/length in 512-byte sectors)."""
    addr, sep, rest = text.partition("=")
    if not sep:
        raise ValueError(f"{text!r}: expected SHELF.SLOT=PATH[,ro][,offset=N][,length=N]")
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
        else:
            raise ValueError(f"unknown export option {part!r} (expected ro, offset=N or length=N)")
    return ExportSpec(shelf, slot, Path(path), readonly=readonly, offset=offset, length=length)


def _device_bytes(fd: int) -> int:
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode):
        return st.st_size
    if stat.S_ISBLK(st.st_mode):
        return os.lseek(fd, 0, os.SEEK_END)
    raise ValueError("not a regular file or block device")


class Export:
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
        flags = (os.O_RDONLY if spec.readonly else os.O_RDWR) | os.O_CLOEXEC
        if sync:
            flags |= os.O_SYNC
        if direct:
            flags |= os.O_DIRECT
        self.fd = os.open(spec.path, flags)
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
            st = os.fstat(self.fd)
        except BaseException:
            os.close(self.fd)
            raise
        self.device_id = (st.st_dev, st.st_ino)
        self.sectors: int = spec.length if spec.length is not None else avail
        self.base = spec.offset * SECTOR
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

    def __repr__(self) -> str:
        return f"Export({self.name} -> {os.fspath(self.spec.path)}, {self.sectors} sectors)"

    def __enter__(self) -> Export:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self._bounce_mv is not None:
            self._bounce_mv.release()
            self._bounce_mv = None
        if self._bounce is not None:
            self._bounce.close()
            self._bounce = None

    def overlaps(self, other: Export) -> bool:
        """True if both windows share sectors of the same file or device."""
        if self.device_id != other.device_id:
            return False
        a0, a1 = self.base, self.base + self.sectors * SECTOR
        b0, b1 = other.base, other.base + other.sectors * SECTOR
        return a0 < b1 and b0 < a1

    def read_into(self, buf: memoryview, lba: int, count: int) -> int:
        """Read `count` sectors at window-relative `lba` into buf; returns bytes read.

        The caller checks the range; an out-of-window request raises ValueError.
        """
        if lba < 0 or count < 0 or lba + count > self.sectors:
            raise ValueError(f"{self.name}: sectors {lba}+{count} outside 0-{self.sectors}")
        n = count * SECTOR
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
        if self._bounce_mv is None:
            return os.pwrite(self.fd, data, self.base + lba * SECTOR)
        self._bounce_mv[:n] = data
        return os.pwrite(self.fd, self._bounce_mv[:n], self.base + lba * SECTOR)

    def flush(self) -> None:
        os.fsync(self.fd)

    def counters(self) -> dict[str, int]:
        return {
            "frames": self.frames,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "errors": self.errors,
            "denied": self.denied,
        }

    def format_counters(self) -> str:
        return f"{self.name}: " + " ".join(f"{k}={v}" for k, v in self.counters().items())


class Target:
    """Answers AoE requests for a set of exports with distinct shelf.slot addresses."""

    def __init__(
        self,
        exports: Sequence[Export],
        mac: bytes,
        mtu: int = 1500,
        bufcnt: int = p.DEFAULT_BUFCNT,
        *,
        mac_allow: Iterable[bytes] = (),
        firmware_version: int = p.FIRMWARE_VERSION,
    ) -> None:
        """`mac_allow`, when not empty, replaces every export's own allow-list."""
        if not exports:
            raise ValueError("a target needs at least one export")
        if len(mac) != 6:
            raise ValueError("target MAC must be 6 bytes")
        if mac[0] & 1:
            raise ValueError(f"target MAC {p.format_mac(mac)} is a multicast address")
        if not 2 <= bufcnt <= 0xFFFF:
            raise ValueError(f"bufcnt {bufcnt} out of range 2-65535 (Linux sends nothing below 2)")
        if mtu < p.MIN_MTU:
            raise ValueError(f"MTU {mtu} too small, need at least {p.MIN_MTU}")
        self.exports: tuple[Export, ...] = tuple(exports)
        self._by_addr: dict[int, Export] = {}
        for exp in self.exports:
            key = (exp.shelf << 8) | exp.slot
            if key in self._by_addr:
                raise ValueError(f"duplicate AoE address {exp.name}")
            self._by_addr[key] = exp
        allow = list(dict.fromkeys(bytes(m) for m in mac_allow))
        if any(len(m) != 6 for m in allow):
            raise ValueError("allowed MACs must be 6 bytes")
        if len(allow) > p.MAX_MASKS:
            raise ValueError(f"at most {p.MAX_MASKS} allowed MACs")
        if allow:
            for exp in self.exports:
                exp.masks = list(allow)
        self.mac = bytes(mac)
        self.mtu = mtu
        self.bufcnt = bufcnt
        self.firmware_version = firmware_version
        self.max_scnt = p.max_sectors_for_mtu(mtu)
        self.max_data = self.max_scnt * SECTOR
        # Reply buffer: one ATA header plus the largest read; other replies are built as bytes.
        self._out = bytearray(p.ATA_HEADER_LEN + p.MAX_SCNT * SECTOR)
        self._omv = memoryview(self._out)
        # Per export: MAC + ethertype, verflags, error, shelf, slot, command of an ATA success reply.
        self._ata_prefix = {
            id(exp): self.mac
            + p.HEADER.pack(b"", b"", p.ETH_P_AOE, p.VERFLAGS_REPLY, 0, exp.shelf, exp.slot, 0, 0)[12:20]
            for exp in self.exports
        }
        self.requests = 0  # requests accepted for any export

    # -- public API ------------------------------------------------------------------------------

    def handle(self, frame: bytes | bytearray | memoryview) -> list[bytes]:
        """Process one received frame; return the reply frames."""
        replies: list[bytes] = []
        self.feed(frame, lambda r: replies.append(bytes(r)))
        return replies

    def announce(self) -> list[bytes]:
        """Unsolicited config replies, one per export: broadcast, or unicast to each allowed MAC."""
        frames = []
        for exp in self.exports:
            for dst in exp.masks or [p.BROADCAST_MAC]:
                frames.append(self._config_reply(exp, dst, 0, p.ConfigCommand.READ, 0))
        return frames

    def close(self) -> None:
        for exp in self.exports:
            exp.close()

    def counters(self) -> dict[str, dict[str, int]]:
        return {exp.name: exp.counters() for exp in self.exports}

    # -- dispatch --------------------------------------------------------------------------------

    def feed(self, frame: bytes | bytearray | memoryview, send: SendFn) -> int:
        """Process one received Ethernet frame, calling send() per reply; returns the reply count."""
        f = frame if type(frame) is memoryview else memoryview(frame)
        n = len(f)
        if n < 24:
            return 0
        dst, src, etype, verfl, _err, major, minor, cmd, tag = _HDR.unpack_from(f)
        if etype != 0x88A2 or verfl & 0x08:
            return 0
        if dst != self.mac and dst != p.BROADCAST_MAC:
            return 0
        exp = self._by_addr.get((major << 8) | minor)
        if exp is not None:
            return self._dispatch(exp, f, n, src, verfl, cmd, tag, send)
        if major != 0xFFFF and minor != 0xFF:
            return 0
        count = 0
        for exp in self.exports:
            if (major == 0xFFFF or major == exp.shelf) and (minor == 0xFF or minor == exp.slot):
                count += self._dispatch(exp, f, n, src, verfl, cmd, tag, send)
        return count

    def _dispatch(
        self, exp: Export, f: memoryview, n: int, src: bytes, verfl: int, cmd: int, tag: int, send: SendFn
    ) -> int:
        if exp.masks and src not in exp.masks:
            exp.denied += 1
            return 0
        self.requests += 1
        exp.frames += 1
        if verfl >> 4 != p.AOE_VERSION:
            return self._error(exp, f, p.AOE_HEADER_LEN, src, p.AoeError.UNSUPPORTED_VERSION, send)
        if cmd == 0:
            return self._ata(exp, f, n, src, send)
        if cmd == 1:
            return self._config(exp, f, n, src, tag, send)
        if cmd == 2:
            return self._mask(exp, f, n, src, send)
        if cmd == 3:
            return self._reserve(exp, f, n, src, send)
        return self._error(exp, f, n, src, p.AoeError.BAD_COMMAND, send)

    def _reply_header(self, exp: Export, f: memoryview, src: bytes, error: int = 0) -> bytearray:
        """Bytes 0..23 of a reply to f (the request's command and tag), as a fresh bytearray."""
        verfl = p.VERFLAGS_ERROR_REPLY if error else p.VERFLAGS_REPLY
        hdr = bytearray(f[:24])
        _HDR.pack_into(hdr, 0, src, self.mac, p.ETH_P_AOE, verfl, error, exp.shelf, exp.slot, f[19], 0)
        hdr[20:24] = f[20:24]
        return hdr

    def _error(self, exp: Export, f: memoryview, length: int, src: bytes, error: int, send: SendFn) -> int:
        """AoE-level error: echo the first `length` bytes of the request with E set."""
        exp.errors += 1
        reply = self._reply_header(exp, f, src, error) + f[24:length]
        send(memoryview(p.pad_frame(bytes(reply))))
        return 1

    # -- ATA -------------------------------------------------------------------------------------

    def _ata(self, exp: Export, f: memoryview, n: int, src: bytes, send: SendFn) -> int:
        if n < 36:
            return 0
        _aflags, _feature, scnt, acmd, lba_lo, lba_hi = _ATA.unpack_from(f, 24)
        if exp.reservations and acmd != 0xEC and src not in exp.reservations:
            return self._error(exp, f, 36, src, p.AoeError.TARGET_RESERVED, send)
        out = self._out
        length = 36
        status = 0x40
        err = 0
        rscnt = 0
        if acmd in _RW_COMMANDS:
            if scnt > self.max_scnt:
                return self._error(exp, f, 36, src, p.AoeError.BAD_ARGUMENT, send)
            lba = lba_lo | (lba_hi << 32) if acmd & 0x04 else lba_lo & 0x0FFFFFFF
            nbytes = scnt << 9
            if acmd & 0x10:  # write
                if n - 36 < nbytes:
                    return 0  # runt write: drop, the initiator retransmits
                if lba + scnt > exp.sectors:
                    status, err, rscnt = 0x41, 0x10, scnt
                elif exp.readonly:
                    status, err, rscnt = 0x41, 0x04, scnt
                else:
                    try:
                        if exp._bounce_mv is None:
                            done = os.pwrite(exp.fd, f[36 : 36 + nbytes], exp.base + (lba << 9))
                        else:
                            done = exp.write_from(f[36 : 36 + nbytes], lba)
                    except OSError:
                        done = -1
                    if done == nbytes:
                        exp.bytes_written += nbytes
                    else:
                        status, err, rscnt = 0x41, 0x04, scnt
            elif lba + scnt > exp.sectors:
                status, err, rscnt = 0x41, 0x10, scnt
            else:
                try:
                    if exp._bounce_mv is None:
                        done = os.preadv(exp.fd, [self._omv[36 : 36 + nbytes]], exp.base + (lba << 9))
                    else:
                        done = exp.read_into(self._omv[36:], lba, scnt)
                except OSError:
                    done = -1
                if done == nbytes:
                    exp.bytes_read += nbytes
                    length = 36 + nbytes
                else:
                    status, err, rscnt = 0x41, 0x04, scnt
        elif acmd == 0xEC:  # IDENTIFY DEVICE
            if scnt != 1:
                return self._error(exp, f, 36, src, p.AoeError.BAD_ARGUMENT, send)
            out[36:548] = exp.identify
            length = 548
        elif acmd == 0xE7 or acmd == 0xEA:  # FLUSH CACHE (EXT)
            try:
                exp.flush()
            except OSError:
                status, err = 0x41, 0x04
        elif acmd == 0xE5:  # CHECK POWER MODE: active/idle
            rscnt = 0xFF
        else:
            status, err, rscnt = 0x41, 0x04, scnt
        if status != 0x40:
            exp.errors += 1
        out[0:6] = f[6:12]
        out[6:20] = self._ata_prefix[id(exp)]
        out[20:36] = f[20:36]
        out[25] = err
        out[26] = rscnt
        out[27] = status
        if length < 60:
            out[length:60] = _ZERO_PAD[length:]
            length = 60
        send(self._omv[:length])
        return 1

    # -- Query Config ----------------------------------------------------------------------------

    def _config_reply(self, exp: Export, dst: bytes, tag: int, ccmd: int, error: int) -> bytes:
        return p.build_config_frame(
            dst,
            self.mac,
            exp.shelf,
            exp.slot,
            tag,
            ccmd=ccmd,
            config=exp.config,
            bufcnt=exp.bufcnt or self.bufcnt,
            firmware=self.firmware_version,
            scnt=self.max_scnt,
            flags=p.FLAG_RESPONSE | (p.FLAG_ERROR if error else 0),
            error=error,
        )

    def _config(self, exp: Export, f: memoryview, n: int, src: bytes, tag: int, send: SendFn) -> int:
        if n < 32:
            return 0
        ccmd = f[29] & 0x0F
        clen = (f[30] << 8) | f[31]
        error = 0
        if ccmd != p.ConfigCommand.READ:
            if clen > p.MAX_CONFIG_LEN or clen > n - 32:
                return 0  # vblade: "if you can't play nice ..."
            data = bytes(f[32 : 32 + clen])
            if ccmd == p.ConfigCommand.TEST:
                if data != exp.config:
                    return 0
            elif ccmd == p.ConfigCommand.PREFIX_TEST:
                if not exp.config.startswith(data):
                    return 0
            elif ccmd == p.ConfigCommand.SET:
                if exp.config and exp.config != data:
                    error = p.AoeError.CONFIG_STRING_PRESENT
                else:
                    exp.config = data
            elif ccmd == p.ConfigCommand.FORCE_SET:
                exp.config = data
            else:
                error = p.AoeError.BAD_ARGUMENT
        if error:
            exp.errors += 1
        send(memoryview(self._config_reply(exp, src, tag, ccmd, error)))
        return 1

    # -- MAC mask list ---------------------------------------------------------------------------

    def _mask(self, exp: Export, f: memoryview, n: int, src: bytes, send: SendFn) -> int:
        if n < 28:
            return 0
        mcmd = f[25]
        if mcmd == p.MaskCommand.EDIT:
            count = f[27]
            if 28 + count * 8 > n:
                return self._error(exp, f, 28, src, p.AoeError.BAD_ARGUMENT, send)
            for i in range(count):
                off = 28 + i * 8
                dcmd = f[off + 1]
                mac = bytes(f[off + 2 : off + 8])
                if dcmd == p.MaskDirective.NOP:
                    continue
                if dcmd == p.MaskDirective.DELETE:
                    if mac in exp.masks:
                        exp.masks.remove(mac)
                    continue
                if dcmd == p.MaskDirective.ADD:
                    if mac in exp.masks:
                        continue
                    if len(exp.masks) < p.MAX_MASKS:
                        exp.masks.append(mac)
                        continue
                    merror = p.MaskError.LIST_FULL
                else:
                    merror = p.MaskError.BAD_DIRECTIVE
                # Failed edit: header only, count = index of the failing directive.
                exp.errors += 1
                reply = self._reply_header(exp, f, src) + p.MASK_ARGS.pack(0, mcmd, merror, i)
                send(memoryview(p.pad_frame(bytes(reply))))
                return 1
        elif mcmd != p.MaskCommand.READ:
            return self._error(exp, f, 28, src, p.AoeError.BAD_ARGUMENT, send)
        # An initial list longer than MAX_MASKS is reported as far as one frame and the count byte allow.
        shown = exp.masks[: min(255, (self.mtu - p.MASK_HEADER_LEN) // p.MASK_DIRECTIVE_LEN)]
        reply = (
            self._reply_header(exp, f, src)
            + p.MASK_ARGS.pack(0, mcmd, 0, len(shown))
            + b"".join(b"\0\0" + mac for mac in shown)
        )
        send(memoryview(p.pad_frame(bytes(reply))))
        return 1

    # -- Reserve/Release -------------------------------------------------------------------------

    def _reserve(self, exp: Export, f: memoryview, n: int, src: bytes, send: SendFn) -> int:
        if n < 26:
            return 0
        rcmd, nmacs = f[24], f[25]
        error = 0
        if rcmd == p.ReserveCommand.SET and exp.reservations and src not in exp.reservations:
            error = p.AoeError.TARGET_RESERVED
        elif rcmd in (p.ReserveCommand.SET, p.ReserveCommand.FORCE_SET):
            if 26 + nmacs * 6 > n:
                error = p.AoeError.BAD_ARGUMENT
            else:
                exp.reservations = [bytes(f[26 + 6 * i : 32 + 6 * i]) for i in range(nmacs)]
        elif rcmd != p.ReserveCommand.READ:
            error = p.AoeError.BAD_ARGUMENT
        if error:
            exp.errors += 1
        reply = (
            self._reply_header(exp, f, src, error)
            + p.RESERVE_ARGS.pack(rcmd, len(exp.reservations))
            + b"".join(exp.reservations)
        )
        send(memoryview(p.pad_frame(bytes(reply))))
        return 1
