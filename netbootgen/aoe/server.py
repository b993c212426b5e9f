"""Serving a `Target`: `open_transport` (address -> open transport) and `ServeLoop`, the selectors loop (one
transport, or several: multipath)."""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from netbootgen.aoe import fastpath
from netbootgen.aoe import protocol as p
from netbootgen.aoe.address import TransportAddress, UnixDgramAddress, UnixStreamAddress, parse_transport
from netbootgen.aoe.dgram import InterfaceTransport, UnixDgramTransport
from netbootgen.aoe.fault import FaultSpec, FaultyTarget
from netbootgen.aoe.stream import UnixStreamTransport
from netbootgen.aoe.target import Target
from netbootgen.aoe.transport import Transport

log = logging.getLogger("netbootgen.aoe")


def open_transport(address: TransportAddress | str, hot_path: str = "auto") -> Transport:
    """Create and open (bind) the transport for an address or address string.

    `hot_path`: "auto" (C when built), "c" or "python"; raises ValueError when "c" is not built.
    """
    addr = parse_transport(address) if isinstance(address, str) else address
    fastpath.resolve(hot_path)
    transport: Transport
    if isinstance(addr, UnixDgramAddress):
        transport = UnixDgramTransport(addr, hot_path)
    elif isinstance(addr, UnixStreamAddress):
        transport = UnixStreamTransport(addr, hot_path)
    else:
        transport = InterfaceTransport(addr, hot_path)
    transport.open()
    return transport


class ServeLoop:
    """Runs a Target on an open Transport until stop() (thread- and signal-safe) is called.

    Announces the exports at start and, while some peer has not spoken yet, every
    `announce_interval` seconds (None: only once).  Counters are logged at exit and on request.
    With `faults`, the transport feeds a `FaultyTarget` (netbootgen.aoe.fault) and the loop delivers its
    held frames when due.

    `more_paths` (multipath, netbootgen.aoe.paths): further (Target, Transport) pairs served by the same loop,
    each target answering from its own MAC over the same `OpenExport`s (one protocol state: config strings,
    mask lists, reservations and export counters are shared; requests and transport counters are per path).
    With several paths no transport lingers in recv() (each wakeup serves one batch), so that a busy path
    never holds up another; each path gets its own fault dice (same spec).
    """

    def __init__(
        self,
        target: Target,
        transport: Transport,
        *,
        more_paths: Sequence[tuple[Target, Transport]] = (),
        announce_interval: float | None = 1.0,
        ready_file: Path | None = None,
        faults: FaultSpec | None = None,
    ) -> None:
        self.target = target
        self.transport = transport
        self.paths: list[tuple[Target, Transport]] = [(target, transport), *more_paths]
        self.path_faults = [FaultyTarget(t, faults) if faults is not None else None for t, _ in self.paths]
        self.faults = self.path_faults[0]
        self.announce_interval = announce_interval
        self.ready_file = ready_file
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        try:
            for (t, tr), faulty in zip(self.paths, self.path_faults, strict=True):
                tr.shared = len(self.paths) > 1
                tr.register(self._sel, faulty or t)  # type: ignore[arg-type]
        except BaseException:
            self._sel.close()
            self._wake_r.close()
            self._wake_w.close()
            raise
        self._stopping = False
        self._dump = False
        self._closed = False
        self._old_handlers: dict[int, Any] = {}
        if ready_file is not None:
            tmp = ready_file.with_name(ready_file.name + ".tmp")
            tmp.write_text(f"{os.getpid()}\n")
            os.replace(tmp, ready_file)

    def __enter__(self) -> ServeLoop:
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
        several = len(self.paths) > 1
        for (target, transport), faulty in zip(self.paths, self.path_faults, strict=True):
            stats = transport.stats()  # first: takes in the C engine's counters
            if several:
                stats += f" requests={target.requests} mac={p.format_mac(target.mac)}"
            log.info("%s: %s", transport, stats)
            if target.group_sources:
                log.info("%sdropped %d frames from group (multicast) source MACs",
                         f"{transport}: " if several else "", target.group_sources)
            if faulty is not None:
                log.info("%s%s", f"{transport}: " if several else "", faulty.stats())

    def serve_forever(self) -> None:
        """Serve until stop(); closes the transport and logs counters on the way out."""
        interval = self.announce_interval
        sel = self._sel
        faulty = [f for f in self.path_faults if f is not None]
        next_tick: float | None = time.monotonic()
        try:
            while not self._stopping:
                timeout = max(0.0, next_tick - time.monotonic()) if next_tick is not None else None
                due = min((d for f in faulty if (d := f.next_due()) is not None), default=None)
                if due is not None:
                    wait = max(0.0, due - time.monotonic())
                    timeout = wait if timeout is None else min(timeout, wait)
                for key, mask in sel.select(timeout):
                    key.data(mask)
                for f in faulty:
                    f.flush()
                if self._dump:
                    self._dump = False
                    self.log_counters()
                if next_tick is not None and time.monotonic() >= next_tick:
                    for target, transport in self.paths:
                        if transport.needs_announce():
                            transport.announce(target.announce())
                    next_tick = time.monotonic() + interval if interval else None
        finally:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        for _, transport in self.paths:
            transport.close()
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()
        self.log_counters()
