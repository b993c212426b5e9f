"""The console follower reports whole failure lines, even when the guest's serial output arrives in pieces."""

from __future__ import annotations

import re
import time
from pathlib import Path

from netbootgen.emulate.console import Stage, failure_line, follow


def test_an_unfinished_failure_line_waits_for_its_end() -> None:
    assert failure_line("x\r\ndracut: FATAL: 95aoe: /dev/etherd/e0.1 did", final=False) is None
    assert failure_line("dracut: FATAL: 95aoe: /dev/etherd/e0.1 did", final=True) == \
        "dracut: FATAL: 95aoe: /dev/etherd/e0.1 did"
    assert failure_line("dracut: FATAL: 95aoe: gone\r\n[ 1.0] more", final=False) == "dracut: FATAL: 95aoe: gone"
    assert failure_line("all is well\r\n", final=True) is None


def test_follow_reports_the_whole_line_that_arrived_in_two_writes(tmp_path: Path) -> None:
    """The CI run of 6ff3fc3 cut this very line after 'did': the reader saw half of it in one read."""
    script = ("printf 'stage one\\r\\n'; printf 'dracut: FATAL: 95aoe: /dev/etherd/e0.1 did'; sleep 1; "
              "printf ' not appear within 20 s (rd.aoe.timeout)\\r\\n'; sleep 60")
    start = time.monotonic()
    report = follow(["sh", "-c", script], [Stage("one", re.compile("stage one")), Stage("two", re.compile("never"))],
                    log_path=tmp_path / "console.log", bios_log=tmp_path / "none.log", stage_timeout=50)
    assert report.failure == "dracut: FATAL: 95aoe: /dev/etherd/e0.1 did not appear within 20 s (rd.aoe.timeout)"
    assert [s.ok for s in report.stages] == [True, False]
    assert time.monotonic() - start < 10  # it stopped at the failure, not at the stage timeout


def test_a_failure_line_that_never_ends_is_reported_after_a_grace(tmp_path: Path) -> None:
    report = follow(["sh", "-c", "printf 'Kernel panic - not syncing: VFS'; sleep 60"], [Stage("x", re.compile("never"))],
                    log_path=tmp_path / "console.log", bios_log=tmp_path / "none.log", stage_timeout=50)
    assert report.failure == "Kernel panic - not syncing: VFS"
