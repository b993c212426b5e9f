"""The ``unix-stream:PATH`` transport of the AoE target: a listening unix stream socket, several clients
(QEMU ``-netdev stream``) at once, every frame with a 4-byte big-endian length prefix.

With the C hot path (`netbootgen.aoe.fastpath`, one engine per transport, shared by its connections) Python
reads each chunk and the engine answers the READ/WRITEs in it, in order, up to the first frame it hands back;
Python answers that one with `Target.feed`, re-syncs the engine's access rules and lets it go on with the rest.
The replies of a chunk, from both, are collected in the connection's `out` and sent with one call.
"""

from __future__ import annotations

import logging
import selectors
import socket
import struct
import time

from netbootgen.aoe import fastpath
from netbootgen.aoe.address import UnixStreamAddress
from netbootgen.aoe.target import Target
from netbootgen.aoe.transport import (
    MAX_FRAME,
    RECV_LINGER,
    RECV_SLICE,
    Transport,
    bind_unix,
    set_timeout,
    tune,
    unlink_if_ours,
)

log = logging.getLogger("netbootgen.aoe")

STREAM_PENDING_LIMIT = 64 << 20

_LEN = struct.Struct(">I")


class _StreamConnection:
    """One length-prefixed stream client (a QEMU NIC).

    Replies to the frames of one received chunk are collected in `out` and sent with one
    system call; while `out` cannot be written completely, reading stops (back-pressure).
    """

    def __init__(self, sock: socket.socket, owner: UnixStreamTransport, number: int) -> None:
        self.sock = sock
        self.owner = owner
        self.number = number
        self.seen = False
        self.closed = False
        self.blocked = False
        self.buf = bytearray(2 * (MAX_FRAME + 4))
        self.mv = memoryview(self.buf)
        self.start = 0
        self.end = 0
        self.out = bytearray()

    def on_event(self, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._push()
        if mask & selectors.EVENT_READ and not self.closed and not self.blocked:
            self._read()
        if self.owner._fast is not None:
            self.owner._absorb()

    def _read(self) -> None:
        recv_into, mv = self.sock.recv_into, self.mv
        flags: int = socket.MSG_DONTWAIT
        deadline = time.monotonic() + RECV_SLICE
        while True:
            try:
                n = recv_into(mv[self.end :], 0, flags)
            except BlockingIOError:
                return
            except OSError as e:
                self.close(f"receive error: {e}")
                return
            if n == 0:
                self.close("disconnected")
                return
            self.end += n
            self._process()
            if self.out and not self.closed:
                self._push()
            if self.closed or self.blocked or time.monotonic() > deadline:
                return
            # With a single client (and no other transport), linger in recv() (SO_RCVTIMEO), not in select().
            flags = 0 if len(self.owner._conns) == 1 and not self.owner.shared else socket.MSG_DONTWAIT

    def _process(self) -> None:
        buf, mv, feed, collect = self.buf, self.mv, self.owner._feed, self._collect
        fast = self.owner._fast
        start, end = self.start, self.end
        if fast is not None and self.owner.shared:
            fast.sync_access()  # another path's Python may have changed a mask list or a reservation
        while end - start >= 4:
            if fast is not None:
                # C answers READ/WRITEs up to the first frame it hands back (or an incomplete one): that one,
                # if any, is Python's, then C goes on with the rest under the access rules it left.
                start, answered = fast.stream(buf, start, end, self.out, STREAM_PENDING_LIMIT)
                if answered:
                    self.seen = True
                if end - start < 4:
                    break
            (flen,) = _LEN.unpack_from(buf, start)
            if flen > MAX_FRAME:
                self.close(f"bad frame length {flen}")
                return
            if end - start - 4 < flen:
                break
            if feed(mv[start + 4 : start + 4 + flen], collect):
                self.seen = True
            start += 4 + flen
            if fast is not None:
                fast.sync_access()
        if start == end:
            self.start = self.end = 0
        elif len(buf) - end < MAX_FRAME + 4:
            rest = bytes(mv[start:end])
            buf[: len(rest)] = rest
            self.start, self.end = 0, len(rest)
        else:
            self.start = start

    def _collect(self, frame: memoryview | bytes) -> None:
        out = self.out
        if len(out) > STREAM_PENDING_LIMIT:
            self.owner.dropped += 1
            return
        out += _LEN.pack(len(frame))
        out += frame

    def send(self, frame: memoryview | bytes) -> None:
        if self.closed:
            return
        self._collect(frame)
        if not self.blocked:
            self._push()

    def _push(self) -> None:
        out = self.out
        try:
            sent = self.sock.send(out, socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError as e:
            self.close(f"send error: {e}")
            return
        if sent == len(out):
            out.clear()
            if self.blocked:
                self.blocked = False
                self.owner._modify(self, selectors.EVENT_READ)
            return
        del out[:sent]
        if not self.blocked:
            # Back-pressure: stop reading requests until the replies are out.
            self.blocked = True
            self.owner._modify(self, selectors.EVENT_WRITE)

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        log.info("%s: client %d %s", self.owner, self.number, reason)
        self.owner._forget(self)
        self.sock.close()


class UnixStreamTransport(Transport):
    def __init__(self, address: UnixStreamAddress, hot_path: str = "auto") -> None:
        super().__init__()
        self.address = address
        self.requested_hot_path = hot_path
        self.sock: socket.socket | None = None
        self._ident: tuple[int, int] | None = None
        self._conns: dict[int, _StreamConnection] = {}
        self._sel: selectors.BaseSelector | None = None
        self._target: Target | None = None
        self._accepted = 0

    def __str__(self) -> str:
        return str(self.address)

    @property
    def clients(self) -> int:
        return len(self._conns)

    def open(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._ident = bind_unix(sock, self.address.path)
            sock.listen(16)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def register(self, sel: selectors.BaseSelector, target: Target) -> None:
        assert self.sock is not None, "transport not open"
        self._sel = sel
        self._target = target
        self._feed = target.feed
        self.hot_path = fastpath.resolve(self.requested_hot_path)
        if self.hot_path == "c":
            self._fast = fastpath.FastPath(target)
        sel.register(self.sock, selectors.EVENT_READ, self._on_accept)

    def _on_accept(self, mask: int) -> None:
        assert self.sock is not None and self._sel is not None and self._target is not None
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return
            except OSError as e:
                log.warning("%s: accept failed: %s", self, e)
                return
            conn.setblocking(True)  # non-blocking per call (MSG_DONTWAIT) or lingering (SO_RCVTIMEO)
            tune(conn)
            set_timeout(conn, socket.SO_RCVTIMEO, RECV_LINGER)
            self._accepted += 1
            c = _StreamConnection(conn, self, self._accepted)
            self._conns[conn.fileno()] = c
            self._sel.register(conn, selectors.EVENT_READ, c.on_event)
            log.info("%s: client %d connected", self, c.number)
            for frame in self._target.announce():
                c.send(frame)

    def _modify(self, conn: _StreamConnection, events: int) -> None:
        if self._sel is not None and not conn.closed:
            self._sel.modify(conn.sock, events, conn.on_event)

    def _forget(self, conn: _StreamConnection) -> None:
        self._conns.pop(conn.sock.fileno(), None)
        if self._sel is not None:
            try:
                self._sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass

    def announce(self, frames: list[bytes]) -> None:
        for conn in list(self._conns.values()):
            if not conn.seen:
                for frame in frames:
                    conn.send(frame)

    def needs_announce(self) -> bool:
        return any(not c.seen for c in self._conns.values())

    def close(self) -> None:
        for conn in list(self._conns.values()):
            conn.close("closed by server")
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        unlink_if_ours(self.address.path, self._ident)
        self._ident = None
