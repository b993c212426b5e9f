"""`serve --fault`: seeded drop/dup/reorder/delay, the same pattern for the same seed, counted and logged.

The unit tests drive a real `Target` (a file export) through `FaultyTarget` with a hand-moved clock; the last
test runs `netbootgen serve --fault` as a process and talks to it with the test initiator over unix datagrams,
retrying like an initiator does: every byte written through the lossy link reads back, and the log shows the
fault counts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from netbootgen.aoe import protocol as p
from netbootgen.aoe.command import serve_command
from netbootgen.aoe.fault import REORDER_HOLD, FaultSpec, FaultyTarget, parse_fault_spec
from netbootgen.aoe.process import ServeProcess
from netbootgen.aoe.store import ExportSpec, OpenExport
from netbootgen.aoe.target import Target
from netbootgen.testing.client import AoeTimeout, DgramChannel, Initiator

CLIENT = bytes.fromhex("525400123456")
TMAC = bytes.fromhex("020000000102")


def test_parse_fault_spec() -> None:
    spec = parse_fault_spec("drop=0.05,dup=0.01,reorder=0.01,delay=3,seed=42")
    assert spec == FaultSpec(drop=0.05, dup=0.01, reorder=0.01, delay_ms=3, seed=42)
    assert parse_fault_spec(str(spec)) == spec
    assert parse_fault_spec("seed=7") == FaultSpec(seed=7)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("drop=1.5", "drop='1.5': expected a probability from 0 to 1"),
        ("dup=x", "dup='x': expected a probability"),
        ("delay=-1", "delay='-1': expected milliseconds"),
        ("seed=1.5", "seed='1.5': expected an integer"),
        ("loss=0.1", "unknown fault 'loss'"),
        ("drop", "'drop': expected KEY=VALUE"),
        ("drop=0.1,drop=0.2", "'drop' given twice"),
        ("drop=1", "drop=1 would lose every frame"),
    ],
)
def test_parse_fault_spec_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_fault_spec(text)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Target]:
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(64 * 512))
    with OpenExport(ExportSpec(1, 2, disk)) as exp:
        yield Target([exp], TMAC)


def read_request(tag: int) -> bytes:
    return p.build_ata_frame(TMAC, CLIENT, 1, 2, tag, cmd=p.AtaCommand.READ_SECTORS_EXT, lba=tag % 64, scnt=1,
                             aflags=p.AFLAG_EXT)


def run_pattern(target: Target, spec: FaultSpec, frames: int = 2000) -> tuple[list[int], str]:
    """Feed `frames` READs (tags 0..n-1); the tags of the replies in the order they left, and the counts."""
    clock = Clock()
    faulty = FaultyTarget(target, spec, clock)
    sent: list[int] = []

    def send(reply: bytes | bytearray | memoryview) -> None:
        sent.append(p.parse_header(bytes(reply)).tag)

    for tag in range(frames):
        faulty.feed(read_request(tag), send)
        clock.now += 0.001
    clock.now += 1
    faulty.flush()
    assert faulty.next_due() is None
    return sent, faulty.stats()


def test_same_seed_same_faults(target: Target) -> None:
    spec = FaultSpec(drop=0.05, dup=0.01, reorder=0.01, seed=42)
    first, stats = run_pattern(target, spec)
    again, stats_again = run_pattern(target, spec)
    assert (first, stats) == (again, stats_again)
    other, _ = run_pattern(target, FaultSpec(drop=0.05, dup=0.01, reorder=0.01, seed=43))
    assert other != first
    clean, clean_stats = run_pattern(target, FaultSpec(seed=42))
    assert clean == list(range(2000))
    assert "in frames=2000 dropped=0 duplicated=0 reordered=0 delayed=0" in clean_stats


def test_counts_match_what_happened(target: Target) -> None:
    sent, stats = run_pattern(target, FaultSpec(drop=0.05, dup=0.01, reorder=0.01, seed=42))
    counts = {d: dict(re.findall(r"(\w+)=(\d+)", part)) for d, part in re.findall(r"(in|out) ([^;]+)", stats)}
    cin, cout = ({k: int(v) for k, v in counts[d].items()} for d in ("in", "out"))
    assert cin["frames"] == 2000
    # every request that got through made one reply (two when duplicated) ...
    assert cout["frames"] == cin["frames"] - cin["dropped"] + cin["duplicated"]
    # ... and every reply that got through left once (twice when duplicated)
    assert len(sent) == cout["frames"] - cout["dropped"] + cout["duplicated"]
    for c in (cin, cout):  # 5% / 1% / 1% of about 2000 frames, loosely
        assert 60 <= c["dropped"] <= 140 and 5 <= c["duplicated"] <= 40 and 5 <= c["reordered"] <= 40, c
    # reordered replies are out of order, but each by one place only
    assert sent != sorted(sent)
    assert all(b > a or a - b <= 2 for a, b in zip(sent, sent[1:], strict=False))


def test_reordered_frame_goes_after_the_next_one_or_after_the_hold(target: Target) -> None:
    clock = Clock()
    faulty = FaultyTarget(target, FaultSpec(reorder=1.0, seed=1), clock)
    sent: list[int] = []

    def send(reply: bytes | bytearray | memoryview) -> None:
        sent.append(p.parse_header(bytes(reply)).tag)

    faulty.feed(read_request(1), send)  # request 1 held back
    assert sent == [] and faulty.next_due() == pytest.approx(clock.now + REORDER_HOLD)
    # request 2 is answered first, then the held 1; reply 2 is held back and leaves after reply 1
    faulty.feed(read_request(2), send)
    assert sent == [1, 2] and faulty.next_due() is None
    faulty.feed(read_request(3), send)  # held back; nothing comes after it
    clock.now += REORDER_HOLD
    faulty.flush()  # request 3 is answered after the hold, and its reply held back in turn
    assert sent == [1, 2]
    clock.now += REORDER_HOLD
    faulty.flush()
    assert sent == [1, 2, 3] and faulty.next_due() is None


def test_delay_holds_every_reply(target: Target) -> None:
    clock = Clock()
    faulty = FaultyTarget(target, FaultSpec(delay_ms=50, seed=1), clock)
    sent: list[int] = []
    for tag in (1, 2, 3):
        faulty.feed(read_request(tag), lambda r: sent.append(p.parse_header(bytes(r)).tag))
        clock.now += 0.010
    assert sent == []
    clock.now = 1000.0 + 0.050
    faulty.flush()
    assert sent == [1]
    clock.now += 0.100
    faulty.flush()
    assert sent == [1, 2, 3] and faulty.next_due() is None
    assert "out frames=3 dropped=0 duplicated=0 reordered=0 delayed=3" in faulty.stats()


def test_serve_fault_options_rejected(tmp_path: Path, sockdir: Path) -> None:
    disk = tmp_path / "d.img"
    disk.write_bytes(bytes(512))
    base = ["--export", f"1.2={disk}", "--transport", f"unix-dgram:{sockdir}/t:{sockdir}/q"]
    for args, message in [
        (["--fault", "drop=2"], "--fault"),
        (["--fault", "drop=0.1", "--hot-path", "c"], "--fault cannot be combined with --hot-path c"),
    ]:
        result = CliRunner().invoke(serve_command, [*base, *args])
        assert result.exit_code == 2 and message in result.output, result.output
    result = CliRunner().invoke(serve_command, ["--export", f"1.2={disk}", "--transport", f"unix-stream:{sockdir}/s",
                                                "--fault", "drop=0.1"])
    assert result.exit_code == 2 and "datagram transport" in result.output, result.output


def test_serve_with_faults_loses_nothing(tmp_path: Path, sockdir: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(256 * 512))
    spec = "drop=0.1,dup=0.05,reorder=0.05,delay=2,seed=5"
    args = ["--export", f"1.2={disk}", "--transport", f"unix-dgram:{sockdir}/t:{sockdir}/q", "--fault", spec]
    payload = os.urandom(128 * 512)
    retries = 0
    with ServeProcess(args, tmp_path / "serve.log") as serve, DgramChannel(sockdir / "q", sockdir / "t") as ch:
        ini = Initiator(ch, shelf=1, slot=2, timeout=0.1)

        def retry(op, *a):  # type: ignore[no-untyped-def]
            nonlocal retries
            for _ in range(50):
                try:
                    return op(*a)
                except AoeTimeout:
                    retries += 1
            raise AssertionError("no reply in 50 tries")

        retry(ini.query)
        for lba in range(0, 128, 2):
            retry(ini.write, lba, payload[lba * 512 : (lba + 2) * 512])
        back = b"".join(retry(ini.read, lba, 2) for lba in range(0, 128, 2))
        serve.stop()
    assert back == payload
    assert disk.read_bytes()[: len(payload)] == payload
    log = serve.output()
    assert f"faults {parse_fault_spec(spec)} (C hot path off)" in log
    assert retries > 0
    m = re.search(r"faults .*: in frames=(\d+) dropped=(\d+) .*; out frames=(\d+) dropped=(\d+)", log)
    assert m is not None, log
    assert int(m.group(2)) + int(m.group(4)) > 0
