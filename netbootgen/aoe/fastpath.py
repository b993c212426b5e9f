"""The C hot path (`netbootgen.aoe._fastpath`) and its link to a `Target`.

The C engine answers ATA READ/WRITE requests on a datagram socket (AF_PACKET or unix datagram), reading them
in batches (`recvmmsg`) and sending each reply as soon as it is built, with the same reply bytes as
`Target.feed`. Every other frame comes back to Python, one at a time and in arrival order (the engine goes on
with the rest of its batch only on the next `run`), which answers it with `Target.feed` and then pushes the
(possibly changed) MAC mask lists and reservations back into the engine. On unix stream connections the
engine owns no socket: `FastPath.stream` answers the length-prefixed frames of a connection's receive buffer
up to the first one Python must answer, appending the replies to the connection's output buffer
(`netbootgen.aoe.stream` reads, hands the rest to Python in the same way, and sends). The `Target` stays the
only owner of protocol state and counters. The engine refuses (RuntimeError) to be reconfigured while a `run`
is active in another thread.

The extension is optional (it needs a C compiler at install time); `AVAILABLE` says whether it was built.
"""

from __future__ import annotations

from typing import Any

from netbootgen.aoe.target import Target

try:
    from netbootgen.aoe import _fastpath
except ImportError:  # built without a C compiler
    _fastpath = None

AVAILABLE = _fastpath is not None
HOT_PATHS = ("auto", "c", "python")

# Engine.run() states
DRAINED, HANDED_OVER, SLICE_OVER = 0, 1, 2


def resolve(hot_path: str) -> str:
    """Pick "c" or "python" (every transport has both); raises ValueError when "c" cannot be honoured."""
    if hot_path not in HOT_PATHS:
        raise ValueError(f"unknown hot path {hot_path!r} (expected {', '.join(HOT_PATHS)})")
    if hot_path == "c":
        if not AVAILABLE:
            raise ValueError("the C hot path is not built (netbootgen.aoe._fastpath is missing; reinstall with gcc)")
        return "c"
    if hot_path == "auto" and AVAILABLE:
        return "c"
    return "python"


class FastPath:
    """One C engine bound to a socket, answering for `target`'s exports."""

    def __init__(self, target: Target, fd: int = -1, peer: str | None = None, ifindex: int = 0) -> None:
        """`fd`: the datagram socket `run` serves (-1: none, `stream` only); `peer`: where replies go on an
        unbound unix datagram socket; `ifindex`: on AF_PACKET, the interface
        served (frames the kernel delivers from another one, e.g. a VLAN device on top of it, are dropped)."""
        if _fastpath is None:
            raise RuntimeError("netbootgen.aoe._fastpath is not built")
        self.target = target
        self.engine: Any = _fastpath.Engine(fd, target.mac, target.max_scnt, peer, ifindex)
        self.engine.set_exports(
            [(e.shelf, e.slot, e.fd, e.base, e.sectors, e.readonly, e.plain) for e in target.exports]
        )
        self.sync_access()
        self._stats = self.engine.stats()

    def sync_access(self) -> None:
        """Copy each export's MAC mask list and reservation state into the engine."""
        for i, exp in enumerate(self.target.exports):
            self.engine.set_access(i, b"".join(exp.masks), bool(exp.reservations))

    def run(self, seconds: float) -> tuple[int, list[bytes]]:
        """Serve for up to `seconds`; returns (state, frames that Python must answer before the next run)."""
        state: int
        frames: list[bytes]
        state, frames = self.engine.run(seconds)
        return state, frames

    def stream(self, buf: bytearray, start: int, end: int, out: bytearray, limit: int) -> tuple[int, int]:
        """Answer the length-prefixed frames of buf[start:end] up to the first one Python must answer (or an
        incomplete one, or one longer than MAX_FRAME), appending the length-prefixed replies to `out` (a reply
        is dropped while `out` holds more than `limit` bytes); returns (where it stopped, frames answered)."""
        stop: int
        answered: int
        stop, answered = self.engine.stream(buf, start, end, out, limit)
        return stop, answered

    def pending(self) -> int:
        """Frames already received that the next `run` looks at first (the rest of a batch)."""
        n: int = self.engine.pending()
        return n

    def answer(self, frame: bytes | bytearray | memoryview) -> Any:
        """The engine's reply to one frame: bytes, None (no reply) or NotImplemented (Python answers)."""
        return self.engine.answer_frame(frame)

    def absorb(self) -> dict[str, int]:
        """Add the engine's counters to the exports and the target; returns send statistics since last call."""
        total = 0
        for exp, (frames, bytes_read, bytes_written, errors) in zip(
            self.target.exports, self.engine.take_counters(), strict=True
        ):
            exp.frames += frames
            exp.bytes_read += bytes_read
            exp.bytes_written += bytes_written
            exp.errors += errors
            total += frames
        self.target.requests += total
        now = self.engine.stats()
        self.target.group_sources += now["group_sources"] - self._stats["group_sources"]
        delta = {k: now[k] - self._stats[k] for k in now}
        self._stats = now
        return delta

    def stats(self) -> dict[str, int]:
        result: dict[str, int] = self.engine.stats()
        return result
