"""A minimal AoE initiator over the unix transports, for tests, benchmarks and debugging.

It plays QEMU's part: `DgramChannel` binds the peer path of a ``unix-dgram`` target,
`StreamChannel` connects to a ``unix-stream`` target.  `Initiator` sends requests and matches
replies by tag.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path
from typing import Protocol

from netbootgen.aoe import protocol as p

_LEN = struct.Struct(">I")


class Channel(Protocol):
    def send(self, frame: bytes) -> None: ...

    def recv(self, timeout: float) -> bytes | None: ...

    def close(self) -> None: ...


class DgramChannel:
    """Bind `local` (QEMU's local.path) and send to `remote` (the target's bind path)."""

    def __init__(self, local: Path, remote: Path) -> None:
        self.local = local
        self.remote = os.fspath(remote)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            local.unlink(missing_ok=True)
            self.sock.bind(os.fspath(local))
        except BaseException:
            self.sock.close()
            raise

    def __enter__(self) -> DgramChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, frame: bytes) -> None:
        self.sock.sendto(frame, self.remote)

    def recv(self, timeout: float) -> bytes | None:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(p.MAX_SCNT * p.SECTOR_SIZE + 4096)
        except TimeoutError:
            return None

    def close(self) -> None:
        self.sock.close()
        self.local.unlink(missing_ok=True)


class StreamChannel:
    """Connect to a unix-stream target; frames are 4-byte big-endian length prefixed."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(os.fspath(path))
        except BaseException:
            self.sock.close()
            raise
        self._buf = b""

    def __enter__(self) -> StreamChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, frame: bytes) -> None:
        self.sock.sendall(_LEN.pack(len(frame)) + frame)

    def recv(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        while True:
            if len(self._buf) >= 4:
                (n,) = _LEN.unpack_from(self._buf)
                if len(self._buf) >= 4 + n:
                    frame, self._buf = self._buf[4 : 4 + n], self._buf[4 + n :]
                    return frame
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 17)
            except TimeoutError:
                return None
            if not chunk:
                raise ConnectionError("target closed the connection")
            self._buf += chunk

    def close(self) -> None:
        self.sock.close()


class AoeTimeout(Exception):
    pass


class Initiator:
    """Talk to one shelf.slot through a channel; unrelated frames (announcements) are skipped."""

    def __init__(
        self,
        channel: Channel,
        *,
        mac: bytes = b"\x52\x54\x00\x12\x34\x56",
        shelf: int = p.BROADCAST_SHELF,
        slot: int = p.BROADCAST_SLOT,
        target_mac: bytes = p.BROADCAST_MAC,
        timeout: float = 5.0,
    ) -> None:
        self.channel = channel
        self.mac = mac
        self.shelf = shelf
        self.slot = slot
        self.target_mac = target_mac
        self.timeout = timeout
        self._tag = 0x1000

    def next_tag(self) -> int:
        self._tag = (self._tag + 1) & 0x7FFFFFFF
        return self._tag

    def exchange(self, frame: bytes, tag: int) -> bytes:
        """Send a request and return the first response frame carrying its tag."""
        self.channel.send(frame)
        deadline = time.monotonic() + self.timeout
        while (left := deadline - time.monotonic()) > 0:
            reply = self.channel.recv(left)
            if reply is None:
                break
            h = p.parse_header(reply)
            if h.ethertype == p.ETH_P_AOE and h.is_response and h.tag == tag and h.dst == self.mac:
                return reply
        raise AoeTimeout(f"no reply to tag {tag:#x}")

    def query(self) -> p.ConfigArgs:
        """Query Config; adopts the replying target's MAC, shelf and slot."""
        tag = self.next_tag()
        reply = self.exchange(
            p.build_config_frame(p.BROADCAST_MAC, self.mac, self.shelf, self.slot, tag), tag
        )
        h = p.parse_header(reply)
        self.target_mac, self.shelf, self.slot = h.src, h.shelf, h.slot
        return p.parse_config(reply)

    def ata(self, cmd: int, lba: int = 0, scnt: int = 0, data: bytes = b"") -> tuple[p.AoeHeader, p.AtaArgs]:
        tag = self.next_tag()
        aflags = (
            p.AFLAG_EXT if cmd in (p.AtaCommand.READ_SECTORS_EXT, p.AtaCommand.WRITE_SECTORS_EXT) else 0
        ) | (p.AFLAG_WRITE if data else 0)
        frame = p.build_ata_frame(
            self.target_mac,
            self.mac,
            self.shelf,
            self.slot,
            tag,
            cmd=cmd,
            lba=lba,
            scnt=scnt,
            aflags=aflags,
            data=data,
        )
        reply = self.exchange(frame, tag)
        return p.parse_header(reply), p.parse_ata(reply)

    def identify(self) -> bytes:
        h, a = self.ata(p.AtaCommand.IDENTIFY_DEVICE, scnt=1)
        if h.is_error or a.cmd_status & p.ATA_STATUS_FAIL_MASK:
            raise OSError(f"IDENTIFY failed: error {h.error}, status {a.cmd_status:#x}")
        return a.data[: p.SECTOR_SIZE]

    def read(self, lba: int, count: int) -> bytes:
        h, a = self.ata(p.AtaCommand.READ_SECTORS_EXT, lba, count)
        if h.is_error or a.cmd_status & p.ATA_STATUS_FAIL_MASK:
            raise OSError(f"read {lba}+{count} failed: error {h.error}, status {a.cmd_status:#x}")
        return a.data[: count * p.SECTOR_SIZE]

    def write(self, lba: int, data: bytes) -> None:
        h, a = self.ata(p.AtaCommand.WRITE_SECTORS_EXT, lba, len(data) // p.SECTOR_SIZE, data)
        if h.is_error or a.cmd_status & p.ATA_STATUS_FAIL_MASK:
            raise OSError(f"write at {lba} failed: error {h.error}, status {a.cmd_status:#x}")
