"""Datagram transports of the AoE target: ``unix-dgram:BIND:PEER`` and ``iface:NAME`` (AF_PACKET).

Both share one receive loop (`_DatagramTransport`), which hands the socket to the C hot path
(`netbootgen.aoe.fastpath`) when it is built and asked for.
"""

from __future__ import annotations

import fcntl
import logging
import os
import selectors
import socket
import struct
import time
from abc import abstractmethod

from netbootgen.aoe import fastpath
from netbootgen.aoe import protocol as p
from netbootgen.aoe.address import InterfaceAddress, UnixDgramAddress
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

SEND_TIMEOUT = 1.0  # seconds a send may block on a full peer before the frame is dropped
DRAIN_BUFFER = 4 << 20  # datagram transports read up to this much before answering
SIOCGIFMTU = 0x8921
SIOCGIFINDEX = 0x8933
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_IGNORE_OUTGOING = 23
PACKET_OTHERHOST, PACKET_OUTGOING = 3, 4
TP_STATUS_VLAN_VALID = 1 << 4
AUXDATA = struct.Struct("IIIHHHH")  # struct tpacket_auxdata: status, len, snaplen, mac, net, vlan_tci, vlan_tpid


class _DatagramTransport(Transport):
    """Shared receive loop of the datagram-style transports (unix-dgram, AF_PACKET)."""

    sock: socket.socket | None
    drain_first = True  # read every queued request before answering (else answer each one at once)

    def __init__(self, hot_path: str = "auto") -> None:
        super().__init__()
        self.sock = None
        self.peer_seen = False
        self.requested_hot_path = hot_path
        self._buf = bytearray(DRAIN_BUFFER)
        self._mv = memoryview(self._buf)

    def _peer_path(self) -> str | None:
        """Where the C engine sends replies (None: the bound socket's own destination)."""
        return None

    def _ifindex(self) -> int:
        """The interface the C engine serves (0: any; frames from other interfaces are dropped)."""
        return 0

    def register(self, sel: selectors.BaseSelector, target: Target) -> None:
        assert self.sock is not None, "transport not open"
        self._feed = target.feed
        self.hot_path = fastpath.resolve(self.requested_hot_path)
        if self.hot_path == "c":
            self._fast = fastpath.FastPath(target, self.sock.fileno(), self._peer_path(), self._ifindex())
        sel.register(self.sock, selectors.EVENT_READ, self._on_readable)

    def _absorbed(self, delta: dict[str, int]) -> None:
        if delta["peer_lost"]:
            self.peer_seen = False  # peer (QEMU) gone: start announcing again for its successor
        elif delta["replies"]:
            self.peer_seen = True

    def _serve_fast(self) -> None:
        # The C engine answers READ/WRITE; everything else comes back here, one frame at a time in arrival
        # order, and is answered by Target.feed, after which the access rules (mask list, reservations) are
        # re-synced before the engine goes on with the rest of its batch.
        fast, feed, send = self._fast, self._feed, self._send
        assert fast is not None
        if self.shared:
            fast.sync_access()  # another path's Python may have changed a mask list or a reservation
        deadline = time.monotonic() + self._slice()
        while True:
            state, frames = fast.run(max(0.0, deadline - time.monotonic()))
            if frames:
                for frame in frames:
                    if feed(frame, send) and not self.peer_seen:
                        self.peer_seen = True
                fast.sync_access()
            if state != fastpath.HANDED_OVER:
                break
            if time.monotonic() > deadline and not fast.pending():
                break  # (frames already received are never left behind: no readable event would fetch them)
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
        deadline = time.monotonic() + self._slice()
        linger = self._linger_flags()
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
            flags = linger
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
        deadline = time.monotonic() + self._slice()
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
            flags = self._linger_flags()

    def _slice(self) -> float:
        """How long one wakeup may serve this socket: RECV_SLICE, or one batch when other paths wait too."""
        return 0.0 if self.shared else RECV_SLICE

    def _linger_flags(self) -> int:
        """recv() flags after the first frame: wait (SO_RCVTIMEO) for the next one, unless others share the loop."""
        return socket.MSG_DONTWAIT if self.shared else 0

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
            tune(sock)
            set_timeout(sock, socket.SO_SNDTIMEO, SEND_TIMEOUT)
            set_timeout(sock, socket.SO_RCVTIMEO, RECV_LINGER)
            self._ident = bind_unix(sock, self.address.bind)
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
        unlink_if_ours(self.address.bind, self._ident)
        self._ident = None


class InterfaceTransport(_DatagramTransport):
    """AF_PACKET socket bound to one interface and the AoE ethertype; announces only once.

    Only frames for this host on this interface, untagged, are served: the kernel delivers to a socket bound
    to the AoE ethertype also frames that arrived 802.1Q/802.1ad-tagged for a VLAN without a device here (tag
    stripped, marked PACKET_OTHERHOST), frames to other unicast MACs (PACKET_OTHERHOST), and frames of a VLAN
    device on top of the interface. Those are dropped and counted (`foreign`), on both hot paths.
    """

    drain_first = False

    def __init__(self, address: InterfaceAddress, hot_path: str = "auto") -> None:
        super().__init__(hot_path)
        self.address = address
        self._announced = False
        self._index = 0
        self.foreign = 0  # frames dropped as not ours (Python path; the C engine counts its own)

    def __str__(self) -> str:
        return str(self.address)

    def open(self) -> None:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(p.ETH_P_AOE))
        try:
            tune(sock)
            set_timeout(sock, socket.SO_SNDTIMEO, SEND_TIMEOUT)
            set_timeout(sock, socket.SO_RCVTIMEO, RECV_LINGER)
            try:
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            except OSError:
                pass
            sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            sock.bind((self.address.name, p.ETH_P_AOE))
            ifreq = fcntl.ioctl(sock.fileno(), SIOCGIFINDEX, struct.pack("16si12x", self.address.name.encode(), 0))
            self._index = int(struct.unpack_from("i", ifreq, 16)[0])
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def _ifindex(self) -> int:
        return self._index

    def _is_foreign(self, address: tuple[object, ...], ancdata: list[tuple[int, int, bytes]]) -> bool:
        """Not ours: another host's, our own outgoing, from another interface, or VLAN-tagged."""
        ifname, _proto, pkttype = address[:3]
        if pkttype in (PACKET_OTHERHOST, PACKET_OUTGOING) or ifname != self.address.name:
            return True
        for level, kind, data in ancdata:
            if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= AUXDATA.size:
                status, *_, tci, _tpid = AUXDATA.unpack_from(data)
                if status & TP_STATUS_VLAN_VALID and tci & 0x0FFF:
                    return True
        return False

    def _answer_each(self) -> None:
        # As the shared loop, with recvmsg to see the packet type, the interface and the VLAN tag.
        assert self.sock is not None
        recvmsg_into = self.sock.recvmsg_into
        feed, send = self._feed, self._send
        frame = self._mv[:MAX_FRAME]
        ancsize = socket.CMSG_SPACE(AUXDATA.size)
        flags: int = socket.MSG_DONTWAIT
        deadline = time.monotonic() + self._slice()
        linger = self._linger_flags()
        count = 0
        while True:
            try:
                n, ancdata, _msg_flags, address = recvmsg_into([frame], ancsize, flags)
            except (BlockingIOError, TimeoutError):
                return
            except OSError as e:
                log.debug("receive error: %s", e)
                return
            if self._is_foreign(address, ancdata):
                self.foreign += 1
            elif feed(frame[:n], send) and not self.peer_seen:
                self.peer_seen = True
            flags = linger
            count += 1
            if not count & 63 and time.monotonic() > deadline:
                return

    def stats(self) -> str:
        foreign = self.foreign + (self._fast.stats()["foreign"] if self._fast is not None else 0)
        return super().stats() + f" foreign={foreign}"

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
