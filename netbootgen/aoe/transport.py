"""The `Transport` interface of the AoE target and the socket helpers its implementations share.

Transports move raw Ethernet frames (destination MAC first, no FCS) between peers and a `Target`:
`netbootgen.aoe.dgram` (unix datagram sockets, AF_PACKET interfaces) and `netbootgen.aoe.stream`
(length-prefixed unix stream sockets); `netbootgen.aoe.server` opens them (`open_transport`) and runs the
selectors loop (`ServeLoop`) around them.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import stat
import struct
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

from netbootgen.aoe.target import Target

if TYPE_CHECKING:
    from netbootgen.aoe.fastpath import FastPath

MAX_FRAME = 1 << 17  # larger than any legal AoE frame (36 + 255 * 512) and QEMU's NET_BUFSIZE
SOCKET_BUFFER = 4 << 20
RECV_LINGER = 0.005  # wait this long in recv() for the next frame before going back to select()
RECV_SLICE = 0.05  # return to the server loop (stop requests, timers, other clients) this often


# -- socket helpers ------------------------------------------------------------------------------


SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)


def tune(sock: socket.socket) -> None:
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


def set_timeout(sock: socket.socket, option: int, seconds: float) -> None:
    """Kernel-level SO_SNDTIMEO/SO_RCVTIMEO: a blocked call fails with EAGAIN after `seconds`.

    The socket stays in (Python) blocking mode, so each send/recv is a single system call.
    """
    sec = int(seconds)
    tv = struct.pack("ll", sec, int((seconds - sec) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, option, tv)


def socket_in_use(path: Path, kind: socket.SocketKind) -> bool:
    """True when a process is bound to the unix socket at path (connect succeeds, or finds another socket
    type there); False for a stale socket file left by a process that is gone (ECONNREFUSED)."""
    with socket.socket(socket.AF_UNIX, kind) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(os.fspath(path))
        except ConnectionRefusedError:
            return False
        except FileNotFoundError:
            return False
        except OSError as e:
            return e.errno in (errno.EPROTOTYPE, errno.EAGAIN, errno.ETIMEDOUT) or isinstance(e, TimeoutError)
    return True


def bind_unix(sock: socket.socket, path: Path) -> tuple[int, int]:
    """Bind to path, replacing a stale socket (never a live one, nor another kind of file); returns (dev, ino).

    A socket some process is still bound to (another `netbootgen serve`, a QEMU) raises OSError EADDRINUSE.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise FileExistsError(errno.EEXIST, "exists and is not a socket", os.fspath(path))
        if socket_in_use(path, sock.type):
            raise OSError(errno.EADDRINUSE, "in use: another process (a running netbootgen serve?) is bound to it",
                          os.fspath(path))
        os.unlink(path)
    sock.bind(os.fspath(path))
    st = os.lstat(path)
    return st.st_dev, st.st_ino


def unlink_if_ours(path: Path, ident: tuple[int, int] | None) -> None:
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
    """Moves frames between peers and a Target; driven by a selector owned by `ServeLoop`."""

    def __init__(self) -> None:
        self.dropped = 0  # replies that could not be sent
        self.hot_path = "python"  # "c" once register() attached the C engine
        self._fast: FastPath | None = None  # the C engine, attached by register() when hot_path is "c"
        # Set by ServeLoop when other transports share its loop: then never linger in recv() for the next frame
        # (one batch per wakeup), so that a busy path does not hold up the others.
        self.shared = False

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
        text = f"dropped={self.dropped} hot_path={self.hot_path}"
        if self._fast is not None:
            self._absorb()
            text += f" handed_to_python={self._fast.stats()['handed_over']}"
        return text

    def _absorb(self) -> None:
        """Take in the C engine's counters (into the target's exports, and its dropped replies into ours)."""
        assert self._fast is not None
        delta = self._fast.absorb()
        self.dropped += delta["dropped"]
        self._absorbed(delta)

    def _absorbed(self, delta: dict[str, int]) -> None:
        """What a transport learns from the engine's send statistics since the last `_absorb` (default: nothing)."""
        return None
