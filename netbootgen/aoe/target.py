"""AoE target logic: the request -> reply state machine over a set of open exports (`netbootgen.aoe.store`).

`Target.feed(frame, send)` is the transport-facing hot path: it calls `send(reply)` for every reply
frame, where `reply` is a memoryview into a buffer owned by the target that is only valid during
the call.  `Target.handle(frame)` is the convenience form returning the replies as bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from netbootgen.aoe import protocol as p
from netbootgen.aoe.store import OpenExport

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


class Target:
    """Answers AoE requests for a set of exports with distinct shelf.slot addresses."""

    def __init__(
        self,
        exports: Sequence[OpenExport],
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
        self.exports: tuple[OpenExport, ...] = tuple(exports)
        self._by_addr: dict[int, OpenExport] = {}
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
        self.group_sources = 0  # frames dropped because their source MAC is a group (multicast) address

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
        if src[0] & 1:
            # The I/G bit: a reply would go to every station of the group (a reflector). Never a sender.
            self.group_sources += 1
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
        self, exp: OpenExport, f: memoryview, n: int, src: bytes, verfl: int, cmd: int, tag: int, send: SendFn
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

    def _reply_header(self, exp: OpenExport, f: memoryview, src: bytes, error: int = 0) -> bytearray:
        """Bytes 0..23 of a reply to f (the request's command and tag), as a fresh bytearray."""
        verfl = p.VERFLAGS_ERROR_REPLY if error else p.VERFLAGS_REPLY
        hdr = bytearray(f[:24])
        _HDR.pack_into(hdr, 0, src, self.mac, p.ETH_P_AOE, verfl, error, exp.shelf, exp.slot, f[19], 0)
        hdr[20:24] = f[20:24]
        return hdr

    def _error(self, exp: OpenExport, f: memoryview, length: int, src: bytes, error: int, send: SendFn) -> int:
        """AoE-level error: echo the first `length` bytes of the request with E set."""
        exp.errors += 1
        reply = self._reply_header(exp, f, src, error) + f[24:length]
        send(memoryview(p.pad_frame(bytes(reply))))
        return 1

    # -- ATA -------------------------------------------------------------------------------------

    def _ata(self, exp: OpenExport, f: memoryview, n: int, src: bytes, send: SendFn) -> int:
        if n < 36:
            return 0
        _aflags, _feature, scnt, acmd, lba_lo, lba_hi = _ATA.unpack_from(f, 24)
        if f[0] & 1:
            exp.broadcast += 1  # answered once per export, as vblade does; counted
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
                        if exp.plain:
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
                    if exp.plain:
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

    def _config_reply(self, exp: OpenExport, dst: bytes, tag: int, ccmd: int, error: int) -> bytes:
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

    def _config(self, exp: OpenExport, f: memoryview, n: int, src: bytes, tag: int, send: SendFn) -> int:
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

    def _mask(self, exp: OpenExport, f: memoryview, n: int, src: bytes, send: SendFn) -> int:
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

    def _reserve(self, exp: OpenExport, f: memoryview, n: int, src: bytes, send: SendFn) -> int:
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
