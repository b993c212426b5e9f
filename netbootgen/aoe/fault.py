"""Faults for tests (`netbootgen serve --fault drop=0.05,dup=0.01,reorder=0.01,delay=MS,seed=N`).

`FaultyTarget` stands in for the `Target` a transport feeds: every frame received (request) and every reply
sent goes through the same seeded dice, so that a lossy link is reproducible without root or `tc`:

- drop=P     the frame is lost;
- dup=P      the frame is delivered twice;
- reorder=P  the frame is held back and delivered after the next frame in the same direction (or after
             REORDER_HOLD s if none comes);
- delay=MS   every reply leaves MS milliseconds late (the round trip grows by MS; replies keep their order);
- seed=N     the dice: the n-th frame in each direction always meets the same fate.

Each frame draws three numbers (drop, reorder, dup) whatever happens to it, so a fault pattern depends only on
the seed and the frame order. The counts per direction are logged with the target's counters.
Only the Python path sees the frames: `netbootgen serve` turns the C hot path off when faults are asked for.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from netbootgen.aoe.target import SendFn, Target

log = logging.getLogger("netbootgen.aoe")

REORDER_HOLD = 0.02  # a reordered frame waits at most this long for the next one
FAULT_SYNTAX = "drop=P,dup=P,reorder=P,delay=MS,seed=N"
DIRECTIONS = ("in", "out")  # requests received, replies sent


@dataclass(frozen=True)
class FaultSpec:
    drop: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    delay_ms: float = 0.0
    seed: int = 0

    def __str__(self) -> str:
        return (f"drop={self.drop:g},dup={self.dup:g},reorder={self.reorder:g},delay={self.delay_ms:g},"
                f"seed={self.seed}")


def parse_fault_spec(text: str) -> FaultSpec:
    """`drop=0.05,dup=0.01,...` -> FaultSpec; raises ValueError naming the bad item."""
    values: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not value:
            raise ValueError(f"{item.strip()!r}: expected KEY=VALUE ({FAULT_SYNTAX})")
        if key in values or (key == "delay" and "delay_ms" in values):
            raise ValueError(f"{key!r} given twice")
        try:
            if key in ("drop", "dup", "reorder"):
                p = float(value)
                if not 0 <= p <= 1:
                    raise ValueError
                values[key] = p
            elif key == "delay":
                ms = float(value)
                if not 0 <= ms <= 60_000:
                    raise ValueError
                values["delay_ms"] = ms
            elif key == "seed":
                values[key] = int(value, 0)
            else:
                raise KeyError(key)
        except KeyError:
            raise ValueError(f"unknown fault {key!r} (known: drop, dup, reorder, delay, seed)") from None
        except ValueError:
            what = "a probability from 0 to 1" if key != "delay" and key != "seed" else (
                "milliseconds from 0 to 60000" if key == "delay" else "an integer")
            raise ValueError(f"{key}={value!r}: expected {what}") from None
    if values.get("drop", 0) >= 1:
        raise ValueError("drop=1 would lose every frame")
    return FaultSpec(**values)


@dataclass
class FaultCounts:
    frames: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    delayed: int = 0

    def __str__(self) -> str:
        return (f"frames={self.frames} dropped={self.dropped} duplicated={self.duplicated} "
                f"reordered={self.reordered} delayed={self.delayed}")


Deliver = Callable[[bytes], int]


@dataclass
class _Held:
    due: float
    frame: bytes
    deliver: Deliver = field(repr=False)


class FaultyTarget:
    """A Target for a transport's register(): `feed` applies the faults in both directions.

    `flush()` delivers held frames that are due; `next_due()` says when to call it next (the serve loop's
    timer). Everything else (exports, announce, ...) is the wrapped target's."""

    def __init__(self, target: Target, spec: FaultSpec, clock: Callable[[], float] = time.monotonic) -> None:
        self.target = target
        self.spec = spec
        self.clock = clock
        self.counts = {d: FaultCounts() for d in DIRECTIONS}
        self._rng = {d: random.Random(f"{spec.seed}:{d}") for d in DIRECTIONS}
        self._held: dict[str, _Held | None] = dict.fromkeys(DIRECTIONS)
        self._delayed: deque[_Held] = deque()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)

    def stats(self) -> str:
        return f"faults {self.spec}: " + "; ".join(f"{d} {self.counts[d]}" for d in DIRECTIONS)

    def feed(self, frame: bytes | bytearray | memoryview, send: SendFn) -> int:
        """Receive one frame through the faults; replies go out through them too."""
        self.flush()

        def deliver_reply(reply: bytes) -> int:
            if self.spec.delay_ms:
                self.counts["out"].delayed += 1
                self._delayed.append(_Held(self.clock() + self.spec.delay_ms / 1000, reply, _sender(send)))
                return 1
            send(reply)
            return 1

        def faulty_send(reply: bytes | bytearray | memoryview) -> None:
            self._apply("out", bytes(reply), deliver_reply)

        return self._apply("in", bytes(frame), lambda f: self.target.feed(f, faulty_send))

    def _apply(self, direction: str, frame: bytes, deliver: Deliver) -> int:
        rng, counts = self._rng[direction], self.counts[direction]
        counts.frames += 1
        n = counts.frames
        r_drop, r_reorder, r_dup = rng.random(), rng.random(), rng.random()
        held = self._held[direction]
        if r_drop < self.spec.drop:
            counts.dropped += 1
            log.debug("fault: %s frame %d dropped", direction, n)
            return 0
        if held is None and r_reorder < self.spec.reorder:
            counts.reordered += 1
            log.debug("fault: %s frame %d held back", direction, n)
            self._held[direction] = _Held(self.clock() + REORDER_HOLD, frame, deliver)
            return 0
        replies = deliver(frame)
        if r_dup < self.spec.dup:
            counts.duplicated += 1
            log.debug("fault: %s frame %d duplicated", direction, n)
            replies += deliver(frame)
        if held is not None:  # the frame held back goes after this one
            self._held[direction] = None
            replies += held.deliver(held.frame)
        return replies

    def next_due(self) -> float | None:
        """The clock time at which a held or delayed frame is due (None: nothing is waiting)."""
        dues = [h.due for h in self._held.values() if h is not None]
        if self._delayed:
            dues.append(self._delayed[0].due)
        return min(dues, default=None)

    def flush(self) -> None:
        """Deliver every held or delayed frame that is due."""
        now = self.clock()
        for direction in DIRECTIONS:
            held = self._held[direction]
            if held is not None and held.due <= now:
                self._held[direction] = None
                held.deliver(held.frame)
        while self._delayed and self._delayed[0].due <= now:
            item = self._delayed.popleft()
            item.deliver(item.frame)


def _sender(send: SendFn) -> Deliver:
    def deliver(frame: bytes) -> int:
        send(frame)
        return 1

    return deliver
