"""The AoE target beside a guest, on a plan: started late, killed and restarted at a stage, or absent.

`TargetRunner` owns the `netbootgen serve` process(es) of one boot (netbootgen.aoe.process.ServeProcess):
boot-test starts it before QEMU and tells it each stage the console follower reaches; the fault tests use
`kill()`/`restart()` directly. A killed target is killed with SIGKILL (a crash: no counters, no clean
close); each start writes its own log (`target.log`, then `target.restart1.log`, ...).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from netbootgen.aoe.process import ServeProcess


@dataclass(frozen=True)
class TargetPlan:
    start_after: float = 0.0  # seconds after start() (or after stage start_at) before the target runs
    start_at: str | None = None  # count start_after from this stage, not from start()
    restart_at: str | None = None  # kill the target when this stage is reached ...
    down_for: float = 5.0  # ... and start it again this many seconds later
    absent: bool = False  # no target at all


class TargetRunner:
    """Runs `netbootgen serve ARGS` according to a TargetPlan; a context manager (stops everything on exit)."""

    def __init__(self, args: Sequence[str], log: Path, plan: TargetPlan | None = None) -> None:
        self.args = list(args)
        self.log = log
        self.plan = plan or TargetPlan()
        self.events: list[tuple[float, str]] = []  # (seconds since start(), what happened)
        self.logs: list[Path] = []
        self._proc: ServeProcess | None = None
        self._lock = threading.Lock()
        self._timers: list[threading.Timer] = []
        self._t0 = time.monotonic()
        self._stopped = False
        self.error: BaseException | None = None  # a start that failed in a timer thread

    def _note(self, what: str) -> None:
        self.events.append((round(time.monotonic() - self._t0, 2), what))

    def _later(self, seconds: float, what: str) -> None:
        timer = threading.Timer(seconds, self._start_guarded, args=(what,))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _start_guarded(self, what: str) -> None:
        try:
            self._start(what)
        except BaseException as e:  # reported by stop()
            self.error = e

    def _start(self, what: str) -> None:
        with self._lock:
            if self._stopped or self._proc is not None:
                return
            n = len(self.logs)
            log = self.log if n == 0 else self.log.with_name(f"{self.log.stem}.restart{n}{self.log.suffix}")
            self.logs.append(log)
            self._proc = ServeProcess(self.args, log)
            self._note(what)

    def start(self) -> TargetRunner:
        self._t0 = time.monotonic()
        if self.plan.absent:
            self._note("no target")
        elif self.plan.start_at is not None:
            self._note(f"target starts {self.plan.start_after:g} s after stage {self.plan.start_at}")
        elif self.plan.start_after > 0:
            self._note(f"target starts in {self.plan.start_after:g} s")
            self._later(self.plan.start_after, "target started (late)")
        else:
            self._start("target started")
        return self

    @property
    def running(self) -> bool:
        return self._proc is not None

    def kill(self) -> None:
        """SIGKILL the target (as if it crashed) and wait for it to be gone."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is None:
                return
            proc.signal(signal.SIGKILL)
            proc.stop()
            self._note("target killed")

    def restart(self, after: float = 0.0) -> None:
        """Start the target again (`after` seconds from now, in the background, when > 0)."""
        if after > 0:
            self._later(after, "target restarted")
        else:
            self._start("target restarted")

    def on_stage(self, name: str) -> None:
        """Called with each stage the guest reaches: starts the target late after plan.start_at, kills it and
        schedules the restart at plan.restart_at."""
        if self.plan.start_at == name and not self.plan.absent:
            self._later(self.plan.start_after, "target started (late)")
        if self.plan.restart_at == name:
            self.kill()
            self.restart(self.plan.down_for)

    def output(self) -> str:
        """Everything the target's runs printed, one after the other."""
        return "".join(f"--- {p.name} ---\n{p.read_text(errors='replace')}" for p in self.logs if p.exists())

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            for timer in self._timers:
                timer.cancel()
            proc, self._proc = self._proc, None
        if proc is not None:
            proc.stop()

    def __enter__(self) -> TargetRunner:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
