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
    report = follow(["sh", "-c", "printf 'Kernel panic - not syncing: VFS'; sleep 60"],
                    [Stage("x", re.compile("never"))], log_path=tmp_path / "console.log",
                    bios_log=tmp_path / "none.log", stage_timeout=50)
    assert report.failure == "Kernel panic - not syncing: VFS"


def test_a_stage_types_its_send_text_when_reached(tmp_path: Path) -> None:
    """As boot-test --entry previous types the label at PXELINUX's boot: prompt."""
    script = "printf 'boot: '; read -r label; echo \"chose <$label>\"; exit 0"
    report = follow(["sh", "-c", script],
                    [Stage("prompt", re.compile("boot: "), send="previous\r"), Stage("chosen", re.compile("chose <"))],
                    log_path=tmp_path / "console.log", bios_log=tmp_path / "none.log", stage_timeout=20)
    assert report.ok, report.console
    assert "chose <previous>" in report.console


def test_no_exit_timeout_stops_a_guest_that_stays_up_after_the_last_stage(tmp_path: Path) -> None:
    """A guest sent to local boot never powers off: with exit_timeout=None it is stopped, not waited for."""
    start = time.monotonic()
    report = follow(["sh", "-c", "echo 'Booting from local disk...'; sleep 60"],
                    [Stage("localboot", re.compile(r"Booting from local disk\.\.\."))],
                    log_path=tmp_path / "console.log", bios_log=tmp_path / "none.log", exit_timeout=None)
    assert report.ok and report.failure is None
    assert time.monotonic() - start < 10
