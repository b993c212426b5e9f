"""Frame transports for the AoE target and the selectors-based server loop.

Transports move raw Ethernet frames (destination MAC first, no FCS):

- ``unix-dgram:BIND:PEER``: one frame per datagram; QEMU ``-netdev dgram`` with
  ``local.path=PEER,remote.path=BIND``.
- ``unix-stream:PATH``: listen on PATH; every frame carries a 4-byte big-endian length prefix;
  QEMU ``-netdev stream,server=off,addr.type=unix,addr.path=PATH``.  Several clients at once.
- ``iface:NAME``: AF_PACKET raw socket on a real interface (needs CAP_NET_RAW).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import selectors
import signal
import socket
import stat
import struct
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from netbootgen.aoe import fastpath
from netbootgen.aoe import protocol as p
from netbootgen.aoe.target import Target

log = logging.getLogger("netbootgen.aoe")

MAX_FRAME = 1 << 17  # larger than any legal AoE frame (36 + 255 * 512) and QEMU's NET_BUFSIZE
SOCKET_BUFFER = 4 << 20
SEND_TIMEOUT = 1.0  # seconds a send may block on a full peer before the frame is dropped
DRAIN_BUFFER = 4 << 20  # datagram transports read up to this much before answering
RECV_LINGER = 0.005  # wait this long in recv() for the next frame before going back to select()
RECV_SLICE = 0.05  # return to the server loop (stop requests, timers, other clients) this often
STREAM_PENDING_LIMIT = 64 << 20
UNIX_PATH_MAX = 107
SIOCGIFMTU = 0x8921
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23

_LEN = struct.Struct(">I")

Callback = Callable[[int], None]


# -- addresses -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnixDgramAddress:
    bind: Path
    peer: Path

    def __str__(self) -> str:
        return f"unix-dgram:{os.fspath(self.bind)}:{os.fspath(self.peer)}"


@dataclass(frozen=True)
class UnixStreamAddress:
    path: Path

    def __str__(self) -> str:
        return f"unix-stream:{os.fspath(self.path)}"


@dataclass(frozen=True)
class InterfaceAddress:
    name: str

    def __str__(self) -> str:
        return f"iface:{self.name}"


TransportAddress = UnixDgramAddress | UnixStreamAddress | InterfaceAddress

TRANSPORT_SYNTAX = "unix-dgram:BIND_PATH:PEER_PATH | unix-stream:PATH | iface:NAME"


def _check_unix_path(path: str) -> Path:
    if not path:
        raise ValueError("empty socket path")
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        raise ValueError(f"socket path {path!r} longer than {UNIX_PATH_MAX} bytes")
    return Path(path)


def parse_transport(text: str) -> TransportAddress:
    """Parse a transport address; raises ValueError naming the bad part."""
    kind, sep, rest = text.partition(":")
    if not sep:
        raise ValueError(f"{text!r}: expected {TRANSPORT_SYNTAX}")
    if kind == "unix-dgram":
        bind, sep, peer = rest.partition(":")
        if not sep or not bind or not peer or ":" in peer:
            raise ValueError(f"{text!r}: expected unix-dgram:BIND_PATH:PEER_PATH")
        if bind == peer:
            raise ValueError(f"{text!r}: BIND_PATH and PEER_PATH must differ")
        return UnixDgramAddress(_check_unix_path(bind), _check_unix_path(peer))
    if kind == "unix-stream":
        return UnixStreamAddress(_check_unix_path(rest))
    if kind == "iface":
        if not rest or len(rest) >= 16 or "/" in rest or any(c.isspace() for c in rest):
            raise ValueError(f"{text!r}: {rest!r} is not a valid interface name")
        return InterfaceAddress(rest)
    raise ValueError(f"{text!r}: unknown transport {kind!r} (expected {TRANSPORT_SYNTAX})")


# -- socket helpers ------------------------------------------------------------------------------


SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)


def _tune(sock: socket.socket) -> None:
    """SOCKET_BUFFER for both directions: 64 jumbo frames in flight need about 1 MiB, above the default
    net.core.rmem_max. With CAP_NET_ADMIN the *BUFFORCE options pass the limit (for this socket only)."""
    for force, opt in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
        except OSError:
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
            except OSError:
                pass


def _set_timeout(sock: socket.socket, option: int, seconds: float) -> None:
    """Kernel-level SO_SNDTIMEO/SO_RCVTIMEO: a blocked call fails with EAGAIN after `seconds`.

    The socket stays in (Python) blocking mode, so each send/recv is a single system call.
    """
    sec = int(seconds)
    tv = struct.pack("ll", sec, int((seconds - sec) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, option, tv)


def _bind_unix(sock: socket.socket, path: Path) -> tuple[int, int]:
    """Bind to path, replacing a stale socket (never another kind of file); returns (dev, ino)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise FileExistsError(errno.EEXIST, "exists and is not a socket", os.fspath(path))
        os.unlink(path)
    sock.bind(os.fspath(path))
    st = os.lstat(path)
    return st.st_dev, st.st_ino


def _unlink_if_ours(path: Path, ident: tuple[int, int] | None) -> None:
    if ident is None:
        return
    try:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == ident:
            os.unlink(path)
    except OSError:
        pass


# -- transports ----------------------------------------------------------------------------------


class Transport(ABC):
    """Moves frames between peers and a Target; driven by a selector owned by `Server`."""

    def __init__(self) -> None:
        self.dropped = 0  # replies that could not be sent
        self.hot_path = "python"  # "c" once register() attached the C engine

    @abstractmethod
    def open(self) -> None:
        """Create and bind the sockets (raises OSError)."""

    @abstractmethod
    def register(self, sel: selectors.BaseSelector, target: Target) -> None:
        """Register with the selector; the key's data is a callback taking the event mask."""

    @abstractmethod
    def announce(self, frames: list[bytes]) -> None:
        """Send unsolicited frames to every peer that has not sent us a request yet."""

    @abstractmethod
    def needs_announce(self) -> bool:
        """True while some peer has not sent a request yet (so announcing may still help)."""

    @abstractmethod
    def close(self) -> None:
        """Close sockets and remove bound socket paths."""

    def hardware_mac(self) -> bytes | None:
        return None

    def hardware_mtu(self) -> int | None:
        return None

    def stats(self) -> str:
        return f"dropped={self.dropped}"


class _DatagramTransport(Transport):
    """Shared receive loop of the datagram-style transports (unix-dgram, AF_PACKET)."""

    sock: socket.socket | None
    drain_first = True  # read every queued request before answering (else answer each one at once)

    def __init__(self, hot_path: str = "auto") -> None:
        super().__init__()
        self.sock = None
        self.peer_seen = False
        self.requested_hot_path = hot_path
        self._fast: fastpath.FastPath | None = None
        self._buf = bytearray(DRAIN_BUFFER)
        self._mv = memoryview(self._buf)

    def _peer_path(self) -> str | None:
        """Where the C engine sends replies (None: the bound socket's own destination)."""
        return None

    def register(self, sel: selectors.BaseSelector, target: Target) -> None:
        assert self.sock is not None, "transport not open"
        self._feed = target.feed
        self.hot_path = fastpath.resolve(self.requested_hot_path, datagram=True)
        if self.hot_path == "c":
            self._fast = fastpath.FastPath(target, self.sock.fileno(), self._peer_path())
        sel.register(self.sock, selectors.EVENT_READ, self._on_readable)

    def stats(self) -> str:
        text = f"dropped={self.dropped} hot_path={self.hot_path}"
        if self._fast is not None:
            self._absorb()
            text += f" handed_to_python={self._fast.stats()['handed_over']}"
        return text

    def _absorb(self) -> None:
        assert self._fast is not None
        delta = self._fast.absorb()
        self.dropped += delta["dropped"]
        if delta["peer_lost"]:
            self.peer_seen = False  # peer (QEMU) gone: start announcing again for its successor
        elif delta["replies"]:
            self.peer_seen = True

    def _serve_fast(self) -> None:
        # The C engine answers READ/WRITE; everything else comes back here, in arrival order, and is answered
        # by Target.feed, after which the access rules (mask list, reservations) are re-synced.
        fast, feed, send = self._fast, self._feed, self._send
        assert fast is not None
        deadline = time.monotonic() + RECV_SLICE
        while True:
            state, frames = fast.run(max(0.0, deadline - time.monotonic()))
            if frames:
                for frame in frames:
                    if feed(frame, send) and not self.peer_seen:
                        self.peer_seen = True
                fast.sync_access()
            if state != fastpath.HANDED_OVER or time.monotonic() > deadline:
                break
        self._absorb()

    def _on_readable(self, mask: int) -> None:
        if self._fast is not None:
            self._serve_fast()
        elif self.drain_first:
            self._drain_then_answer()
        else:
            self._answer_each()

    def _answer_each(self) -> None:
        # Answer every request as soon as it is read (lowest latency, so the initiator's window keeps moving),
        # then linger in recv() (SO_RCVTIMEO) for the next one rather than going back to select().
        assert self.sock is not None
        recv_into = self.sock.recv_into
        mv, feed, send = self._mv, self._feed, self._send
        frame = mv[:MAX_FRAME]
        flags: int = socket.MSG_DONTWAIT
        deadline = time.monotonic() + RECV_SLICE
        count = 0
        while True:
            try:
                n = recv_into(frame, MAX_FRAME, flags)
            except (BlockingIOError, TimeoutError):
                return
            except OSError as e:
                log.debug("receive error: %s", e)
                return
            if feed(frame[:n], send) and not self.peer_seen:
                self.peer_seen = True
            flags = 0
            count += 1
            if not count & 63 and time.monotonic() > deadline:
                return

    def _drain_then_answer(self) -> None:
        # First drain every queued request, then answer them: a unix datagram socket only
        # queues net.unix.max_dgram_qlen (10) datagrams, and QEMU busy-polls while ours is full.
        # Then, rather than going back to select(), linger in recv() (SO_RCVTIMEO) for the next
        # request.
        assert self.sock is not None
        recv_into = self.sock.recv_into
        mv, feed, send = self._mv, self._feed, self._send
        limit = len(mv) - MAX_FRAME
        flags: int = socket.MSG_DONTWAIT
        deadline = time.monotonic() + RECV_SLICE
        while True:
            frames = []
            off = 0
            while off <= limit:
                try:
                    n = recv_into(mv[off:], MAX_FRAME, flags)
                except BlockingIOError:
                    break
                except OSError as e:
                    log.debug("receive error: %s", e)
                    break
                frames.append((off, off + n))
                off += n
                flags = socket.MSG_DONTWAIT
            if not frames:
                return
            for start, end in frames:
                if feed(mv[start:end], send) and not self.peer_seen:
                    self.peer_seen = True
            if time.monotonic() > deadline:
                return
            flags = 0

    @abstractmethod
    def _send(self, frame: memoryview | bytes) -> None: ...

    def announce(self, frames: list[bytes]) -> None:
        for frame in frames:
            self._send(frame)

    def needs_announce(self) -> bool:
        return not self.peer_seen


class UnixDgramTransport(_DatagramTransport):
    def __init__(self, address: UnixDgramAddress, hot_path: str = "auto") -> None:
        super().__init__(hot_path)
        self.address = address
        self._peer = os.fspath(address.peer)
        self._ident: tuple[int, int] | None = None

    def __str__(self) -> str:
        return str(self.address)

    def open(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            _tune(sock)
            _set_timeout(sock, socket.SO_SNDTIMEO, SEND_TIMEOUT)
            _set_timeout(sock, socket.SO_RCVTIMEO, RECV_LINGER)
            self._ident = _bind_unix(sock, self.address.bind)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def _peer_path(self) -> str | None:
        return self._peer

    def _send(self, frame: memoryview | bytes) -> None:
        assert self.sock is not None
        try:
            self.sock.sendto(frame, self._peer)
        except (FileNotFoundError, ConnectionRefusedError):
            # Peer (QEMU) gone: start announcing again for its successor.
            self.peer_seen = False
            self.dropped += 1
        except OSError as e:
            self.dropped += 1
            log.debug("send to %s failed: %s", self._peer, e)

    def announce(self, frames: list[bytes]) -> None:
        assert self.sock is not None
        for frame in frames:
            try:
                self.sock.sendto(frame, self._peer)
            except OSError:
                return  # typically ENOENT/ECONNREFUSED: QEMU is not up yet

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        _unlink_if_ours(self.address.bind, self._ident)
        self._ident = None


class InterfaceTransport(_DatagramTransport):
    """AF_PACKET socket bound to one interface and the AoE ethertype; announces only once."""

    drain_first = False

    def __init__(self, address: InterfaceAddress, hot_path: str = "auto") -> None:
        super().__init__(hot_path)
        self.address = address
        self._announced = False

    def __str__(self) -> str:
        return str(self.address)

    def open(self) -> None:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(p.ETH_P_AOE))
        try:
            _tune(sock)
            _set_timeout(sock, socket.SO_SNDTIMEO, SEND_TIMEOUT)
            _set_timeout(sock, socket.SO_RCVTIMEO, RECV_LINGER)
            try:
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            except OSError:
                pass
            sock.bind((self.address.name, p.ETH_P_AOE))
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def hardware_mac(self) -> bytes | None:
        assert self.sock is not None
        return bytes(self.sock.getsockname()[4])

    def hardware_mtu(self) -> int | None:
        assert self.sock is not None
        ifreq = struct.pack("16si12x", self.address.name.encode(), 0)
        res = fcntl.ioctl(self.sock.fileno(), SIOCGIFMTU, ifreq)
        return int(struct.unpack_from("i", res, 16)[0])

    def _send(self, frame: memoryview | bytes) -> None:
        assert self.sock is not None
        try:
            self.sock.send(frame)
        except OSError as e:
            self.dropped += 1
            log.debug("send on %s failed: %s", self.address.name, e)

    def announce(self, frames: list[bytes]) -> None:
        self._announced = True
        super().announce(frames)

    def needs_announce(self) -> bool:
        return not self._announced

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


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
            # With a single client, linger in recv() (SO_RCVTIMEO) instead of returning to select().
            flags = 0 if len(self.owner._conns) == 1 else socket.MSG_DONTWAIT

    def _process(self) -> None:
        buf, mv, feed, collect = self.buf, self.mv, self.owner._feed, self._collect
        start, end = self.start, self.end
        while end - start >= 4:
            (flen,) = _LEN.unpack_from(buf, start)
            if flen > MAX_FRAME:
                self.close(f"bad frame length {flen}")
                return
            if end - start - 4 < flen:
                break
            if feed(mv[start + 4 : start + 4 + flen], collect):
                self.seen = True
            start += 4 + flen
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
    def __init__(self, address: UnixStreamAddress) -> None:
        super().__init__()
        self.address = address
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
            self._ident = _bind_unix(sock, self.address.path)
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
            _tune(conn)
            _set_timeout(conn, socket.SO_RCVTIMEO, RECV_LINGER)
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
        _unlink_if_ours(self.address.path, self._ident)
        self._ident = None


def open_transport(address: TransportAddress | str, hot_path: str = "auto") -> Transport:
    """Create and open (bind) the transport for an address or address string.

    `hot_path`: "auto" (C for datagram transports when built), "c" or "python"; raises ValueError when "c"
    cannot serve this transport.
    """
    addr = parse_transport(address) if isinstance(address, str) else address
    fastpath.resolve(hot_path, datagram=not isinstance(addr, UnixStreamAddress))
    transport: Transport
    if isinstance(addr, UnixDgramAddress):
        transport = UnixDgramTransport(addr, hot_path)
    elif isinstance(addr, UnixStreamAddress):
        transport = UnixStreamTransport(addr)
    else:
        transport = InterfaceTransport(addr, hot_path)
    transport.open()
    return transport


# -- server loop ---------------------------------------------------------------------------------


class Server:
    """Runs a Target on an open Transport until stop() (thread- and signal-safe) is called.

    Announces the exports at start and, while some peer has not spoken yet, every
    `announce_interval` seconds (None: only once).  Counters are logged at exit and on request.
    """

    def __init__(
        self,
        target: Target,
        transport: Transport,
        *,
        announce_interval: float | None = 1.0,
        ready_file: Path | None = None,
    ) -> None:
        self.target = target
        self.transport = transport
        self.announce_interval = announce_interval
        self.ready_file = ready_file
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        self.transport.register(self._sel, target)
        self._stopping = False
        self._dump = False
        self._closed = False
        self._old_handlers: dict[int, Any] = {}
        if ready_file is not None:
            tmp = ready_file.with_name(ready_file.name + ".tmp")
            tmp.write_text(f"{os.getpid()}\n")
            os.replace(tmp, ready_file)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_wake(self, mask: int) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    def stop(self) -> None:
        """Ask serve_forever() to return; callable from other threads and signal handlers."""
        self._stopping = True
        self._wake()

    def request_counters(self) -> None:
        self._dump = True
        self._wake()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop the server, SIGUSR1 logs counters (main thread only)."""

        def on_stop(signum: int, frame: FrameType | None) -> None:
            self.stop()

        def on_dump(signum: int, frame: FrameType | None) -> None:
            self.request_counters()

        for signum, handler in (
            (signal.SIGTERM, on_stop),
            (signal.SIGINT, on_stop),
            (signal.SIGUSR1, on_dump),
        ):
            self._old_handlers[signum] = signal.signal(signum, handler)

    def log_counters(self) -> None:
        for exp in self.target.exports:
            log.info("%s", exp.format_counters())
        log.info("%s: %s", self.transport, self.transport.stats())

    def serve_forever(self) -> None:
        """Serve until stop(); closes the transport and logs counters on the way out."""
        interval = self.announce_interval
        sel = self._sel
        transport = self.transport
        next_tick: float | None = time.monotonic()
        try:
            while not self._stopping:
                timeout = max(0.0, next_tick - time.monotonic()) if next_tick is not None else None
                for key, mask in sel.select(timeout):
                    key.data(mask)
                if self._dump:
                    self._dump = False
                    self.log_counters()
                if next_tick is not None and time.monotonic() >= next_tick:
                    if transport.needs_announce():
                        transport.announce(self.target.announce())
                    next_tick = time.monotonic() + interval if interval else None
        finally:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        self.transport.close()
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()
        self.log_counters()
