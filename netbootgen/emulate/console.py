"""Follow a booting guest's serial console (pexpect) and the firmware's debug log, stage by stage."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pexpect

from netbootgen.run import spawn_console

FAILURE_PATTERNS = [
    re.compile(r"Kernel panic - not syncing[^\r\n]*"),
    re.compile(r"Entering emergency mode[^\r\n]*"),
    re.compile(r"Dropping to debug shell[^\r\n]*"),
    re.compile(r"dracut: FATAL:[^\r\n]*"),
]


LINE_GRACE = 3.0  # seconds to wait for the rest of a failure line that arrived in pieces


def failure_line(text: str, *, final: bool) -> str | None:
    """The first complete console line that says the boot failed; with `final`, an unfinished last line counts too."""
    for pat in FAILURE_PATTERNS:
        for m in pat.finditer(text):
            if final or m.end() < len(text):
                return m.group(0).strip()
    return None


@dataclass(frozen=True)
class Stage:
    name: str
    pattern: re.Pattern[str]
    source: str = "serial"  # or "bios": SeaBIOS's debug port log
    send: str | None = None  # typed on the serial console once the stage is reached (a label at PXELINUX's boot:)


@dataclass
class StageResult:
    name: str
    ok: bool = False
    t: float | None = None


@dataclass
class ConsoleReport:
    stages: list[StageResult]
    console: str
    exit_status: int | None
    failure: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failure is None and all(s.ok for s in self.stages)

    def last_lines(self, n: int = 25) -> str:
        return "\n".join(self.console.replace("\r", "").splitlines()[-n:])


def follow(
    argv: Sequence[str],
    stages: Sequence[Stage],
    *,
    log_path: Path,
    bios_log: Path,
    stage_timeout: float = 180.0,
    exit_timeout: float | None = 30.0,
    progress: Callable[[StageResult], None] = lambda r: None,
) -> ConsoleReport:
    """Start `argv`, watch for each stage in order; each must appear within `stage_timeout` s of the previous.

    A stage's `send` text is typed on the console when it is reached. After the last stage, wait up to
    `exit_timeout` s for the guest to power off (QEMU exits); None: stop it at once (a guest that is not meant to
    power off, e.g. one PXELINUX's `default` sent to local boot)."""
    results = [StageResult(s.name) for s in stages]
    text = ""
    failure: str | None = None
    start = time.monotonic()
    last_reached = 0.0
    partial_since = float("inf")
    with log_path.open("w", encoding="utf-8", errors="replace") as log:
        child = spawn_console(argv, log=log)
        try:
            eof = False
            while True:
                try:
                    text += child.read_nonblocking(65536, timeout=0.25)
                except pexpect.TIMEOUT:
                    pass
                except pexpect.EOF:
                    eof = True
                now = time.monotonic() - start
                bios = bios_log.read_text(errors="replace") if bios_log.exists() else ""
                for stage, res in zip(stages, results, strict=True):
                    if res.ok:
                        continue
                    haystack = bios if stage.source == "bios" else text
                    if stage.pattern.search(haystack):
                        res.ok, res.t = True, round(now, 2)
                        last_reached = max(last_reached, now)
                        progress(res)
                        if stage.send is not None:
                            child.send(stage.send)
                failure = failure_line(text, final=eof or now - partial_since > LINE_GRACE)
                if failure is None and partial_since == float("inf") and failure_line(text, final=True):
                    partial_since = now  # the line has begun: wait a moment for its end
                if failure or eof:
                    break
                if all(r.ok for r in results):
                    if exit_timeout is None:
                        break
                    child.expect(pexpect.EOF, timeout=exit_timeout)
                    text += child.before or ""
                    break
                if now - last_reached > stage_timeout:
                    pending = next(r.name for r in results if not r.ok)
                    failure = f"stage {pending} not reached within {stage_timeout:.0f} s"
                    break
        except pexpect.TIMEOUT:
            failure = f"the guest did not power off within {exit_timeout:.0f} s after the last stage"
        finally:
            if child.isalive():
                child.terminate(force=True)
            child.close()
    if failure is None and not all(r.ok for r in results):
        pending = next(r.name for r in results if not r.ok)
        failure = f"QEMU exited before stage {pending} (exit status {child.exitstatus})"
    return ConsoleReport(results, text, child.exitstatus, failure, round(time.monotonic() - start, 2))
