"""The C hot path (netbootgen.aoe._fastpath): the same reply bytes, counters and file contents as Target.feed.

The differential fuzz feeds the same random and mutated frames to a pure-Python target and to a target whose
READ/WRITE requests the C engine answers (everything else going to Python, as in the server). Then the socket
tests run the engine in the real server loop over unix datagram sockets.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_aoe_fuzz import CLIENT, POOL, _frame, _lba, _mutate

from netbootgen.aoe import fastpath
from netbootgen.aoe import protocol as p
from netbootgen.aoe.command import serve_command
from netbootgen.aoe.server import ServeLoop, open_transport
from netbootgen.aoe.store import ExportSpec, OpenExport
from netbootgen.aoe.target import Target
from netbootgen.aoe.transport import set_timeout
from netbootgen.testing.client import DgramChannel, Initiator

TMAC = bytes.fromhex("020000000102")
FRAMES = 100_000
SEED = 0xFA57


def test_extension_is_built() -> None:
    # `pip install` builds it whenever gcc and the Python headers are there, which `make` installs.
    assert fastpath.AVAILABLE, "netbootgen.aoe._fastpath was not built"
    assert fastpath.resolve("auto") == "c"  # on every transport (unix-stream too: tests/test_aoe_streampath.py)
    assert fastpath.resolve("c") == "c"
    assert fastpath.resolve("python") == "python"
    with pytest.raises(ValueError, match="unknown hot path"):
        fastpath.resolve("fast")
    engine = fastpath._fastpath.Engine.__new__(fastpath._fastpath.Engine)  # never initialised: an error, no crash
    with pytest.raises(RuntimeError, match="not initialised"):
        engine.run(0.0)
    with pytest.raises(RuntimeError, match="not initialised"):
        engine.answer_frame(bytes(60))


def test_engine_without_socket_has_no_receive_batch() -> None:
    # A stream engine (fd -1) answers from Python's buffer: no 32 x 128 KiB receive batch, and run() refuses.
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        stream_only = fastpath._fastpath.Engine(-1, TMAC, 17)
        without = tracemalloc.get_traced_memory()[0] - before
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        before = tracemalloc.get_traced_memory()[0]
        bound = fastpath._fastpath.Engine(a.fileno(), TMAC, 17)
        with_socket = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert without < 1 << 20 <= 4 << 20 <= with_socket, (without, with_socket)
    with pytest.raises(RuntimeError, match="no socket"):
        stream_only.run(0.0)
    del bound
    a.close()
    b.close()


def _targets(tmp_path: Path, seed: int) -> tuple[Target, Target, list[Path]]:
    """Two targets over identical copies of the same files: e1.2 a window of a.img, e1.3 b.img read-only."""
    rng = random.Random(seed)
    a, b = rng.randbytes(300 * 512), rng.randbytes(64 * 512)
    paths = []
    targets = []
    for name in ("py", "c"):
        (tmp_path / name).mkdir()
        pa, pb = tmp_path / name / "a.img", tmp_path / name / "b.img"
        pa.write_bytes(a)
        pb.write_bytes(b)
        paths += [pa, pb]
        exports = [
            OpenExport(ExportSpec(1, 2, pa, offset=20, length=200), hostname="fuzz"),
            OpenExport(ExportSpec(1, 3, pb, readonly=True), hostname="fuzz"),
        ]
        targets.append(Target(exports, TMAC, mtu=9000))
    return targets[0], targets[1], paths


def _rw_frame(rng: random.Random, tag: int) -> bytes:
    """A READ/WRITE request that the C engine is meant to answer, with the edge cases of its checks."""
    dst = TMAC if rng.random() < 0.95 else p.BROADCAST_MAC
    shelf, slot = rng.choice([(1, 2), (1, 2), (1, 3), (1, 4)])
    verfl = rng.choice([0x10] * 8 + [0x11, 0x12, 0x14, 0x18, 0x20])
    cmd = rng.choice([0x20, 0x24, 0x30, 0x34])
    scnt = rng.choice([0, 1, 2, 2, 8, 17, 17, 18, 255])
    data = b""
    if cmd in (0x30, 0x34):
        data = rng.randbytes(scnt * 512 if rng.random() < 0.9 else rng.randrange(0, scnt * 512 + 1))
    frame = p.build_header(dst, rng.choice(POOL), shelf, slot, 0, tag)
    frame = frame[:14] + bytes((verfl,)) + frame[15:]
    args = bytes((rng.getrandbits(8), rng.getrandbits(8), scnt, cmd)) + _lba(rng).to_bytes(6, "little")
    return p.pad_frame(frame + args + rng.randbytes(2) + data)


def _unlock(target: Target) -> list[bytes]:
    """Frames that clear every export's mask list and reservation (applied to `target`, returned for the other)."""
    frames = []
    for exp in target.exports:
        src = exp.masks[0] if exp.masks else CLIENT
        dirs = [(p.MaskDirective.DELETE, m) for m in exp.masks]
        frames.append(p.build_mask_frame(TMAC, src, exp.shelf, exp.slot, 1, mcmd=1, directives=dirs))
        frames.append(p.build_reserve_frame(TMAC, src, exp.shelf, exp.slot, 2, rcmd=2))
        for frame in frames[-2:]:
            target.handle(frame)
        assert not exp.masks and not exp.reservations
    return frames


def test_differential_fuzz(tmp_path: Path) -> None:
    py, ct, paths = _targets(tmp_path, SEED)
    fast = fastpath.FastPath(ct, -1)
    rng = random.Random(SEED)
    answered = handed = 0
    last = b""
    try:
        for i in range(FRAMES):
            if i % 100 == 0:
                # Random mask edits and reservations soon lock most requests out (and hand them to Python):
                # lift them every 100 frames, through the protocol, on both targets.
                for frame in _unlock(py):
                    ct.handle(frame)
                fast.sync_access()
            tag = rng.getrandbits(32)
            kind = rng.random()
            if kind < 0.05:
                frame = rng.randbytes(rng.randrange(0, 120))
            elif kind < 0.30 and last:
                frame = _mutate(rng, last)
            elif kind < 0.55:
                frame = _frame(rng, tag)
            else:
                frame = _rw_frame(rng, tag)
            last = frame if len(frame) >= 24 else last
            reply = fast.answer(frame)
            if reply is NotImplemented:
                handed += 1
                got = ct.handle(frame)
                fast.sync_access()
            else:
                answered += 1
                got = [] if reply is None else [reply]
            assert got == py.handle(frame), f"frame {i}: {frame[:40].hex()}"
        fast.absorb()
        assert ct.counters() == py.counters()
        assert ct.requests == py.requests
    finally:
        py.close()
        ct.close()
    for a, b in zip(paths[:2], paths[2:], strict=True):
        assert a.read_bytes() == b.read_bytes(), f"{b} differs from the Python target's file"
    # Both paths were exercised a lot (READ/WRITE requests go to C, the rest to Python).
    assert answered > 20_000 and handed > 20_000, (answered, handed)


def test_direct_exports_stay_in_python(tmp_path: Path) -> None:
    path = tmp_path / "d.img"
    path.write_bytes(os.urandom(64 * 512))
    try:
        exp = OpenExport(ExportSpec(1, 2, path), direct=True)
    except OSError as e:  # tmpfs has no O_DIRECT
        pytest.skip(f"O_DIRECT not supported on {tmp_path}: {e}")
    target = Target([exp], TMAC)
    fast = fastpath.FastPath(target, -1)
    try:
        frame = p.build_ata_frame(TMAC, CLIENT, 1, 2, 1, cmd=0x24, lba=0, scnt=2)
        assert fast.answer(frame) is NotImplemented
        (r,) = target.handle(frame)
        assert r[36:] == path.read_bytes()[:1024]
    finally:
        target.close()


def _burst(ch: DgramChannel, frames: list[bytes]) -> dict[int, bytes]:
    """Send all frames without waiting while a thread collects the replies; returns them by tag."""
    replies: dict[int, bytes] = {}

    def receive() -> None:
        while len(replies) < len(frames) and (r := ch.recv(2.0)) is not None:
            replies[p.parse_header(r).tag] = r

    thread = threading.Thread(target=receive)
    thread.start()
    for frame in frames:
        ch.sock.settimeout(5.0)
        ch.sock.sendto(frame, ch.remote)
    thread.join(10)
    assert len(replies) == len(frames), f"{len(replies)} replies to {len(frames)} requests"
    return replies


def _serve(target: Target, address: str) -> tuple[ServeLoop, threading.Thread]:
    server = ServeLoop(target, open_transport(address, "c"), announce_interval=0.1)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def test_server_loop_with_c_engine(tmp_path: Path, sockdir: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(os.urandom(2048 * 512))
    tsock, qsock = sockdir / "t.sock", sockdir / "q.sock"
    exp = OpenExport(ExportSpec(1, 2, disk))
    target = Target([exp], TMAC)
    server, thread = _serve(target, f"unix-dgram:{tsock}:{qsock}")
    assert server.transport.hot_path == "c"
    other = POOL[1]
    try:
        with DgramChannel(qsock, tsock) as ch:
            assert ch.recv(2.0) is not None  # announcement (Python)
            ini = Initiator(ch)
            ini.query()
            # A burst of 64 writes then 64 reads, all in flight at once (a thread receives meanwhile, as QEMU
            # would): read in batches, every tag answered exactly once.
            blocks = {lba: os.urandom(1024) for lba in range(0, 128, 2)}
            writes = [
                p.build_ata_frame(TMAC, ini.mac, 1, 2, tag, cmd=0x34, lba=lba, scnt=2, aflags=0x41, data=data)
                for tag, (lba, data) in enumerate(blocks.items(), 1000)
            ]
            acks = _burst(ch, writes)
            assert sorted(acks) == list(range(1000, 1064)) and all(r[27] == 0x40 for r in acks.values())
            reads = [p.build_ata_frame(TMAC, ini.mac, 1, 2, tag, cmd=0x24, lba=lba, scnt=2)
                     for tag, lba in enumerate(blocks, 2000)]  # fmt: skip
            got = _burst(ch, reads)
            assert {tag: r[36:] for tag, r in got.items()} == {tag: blocks[lba] for tag, lba in enumerate(blocks, 2000)}
            content = disk.read_bytes()
            assert all(content[lba * 512 : lba * 512 + 1024] == d for lba, d in blocks.items())
            # Out of range: the ATA error comes from C, byte for byte what Python would send.
            bad = p.build_ata_frame(TMAC, ini.mac, 1, 2, 7, cmd=0x24, lba=2047, scnt=2)
            ch.send(bad)
            r = ch.recv(2.0)
            assert r is not None and (r[25], r[27]) == (0x10, 0x41)
            # A mask list set through the protocol (answered by Python) reaches the engine: a read from a MAC
            # that is not on it gets no reply, one from the listed MAC does.
            ch.send(p.build_mask_frame(TMAC, ini.mac, 1, 2, 8, mcmd=1, directives=[(p.MaskDirective.ADD, other)]))
            r = ch.recv(2.0)
            assert r is not None and [mac for _, mac in p.parse_mask(r).directives] == [other]
            ch.send(p.build_ata_frame(TMAC, ini.mac, 1, 2, 9, cmd=0x24, lba=0, scnt=1))
            assert ch.recv(0.5) is None
            ch.send(p.build_ata_frame(TMAC, other, 1, 2, 10, cmd=0x24, lba=0, scnt=1))
            r = ch.recv(2.0)
            assert r is not None and r[:6] == other and r[36:548] == content[:512]
            # A reservation for `other` alone: the C engine hands requests back, Python answers "reserved".
            ch.send(p.build_mask_frame(TMAC, other, 1, 2, 11, mcmd=1, directives=[(p.MaskDirective.ADD, ini.mac)]))
            assert ch.recv(2.0) is not None
            ch.send(p.build_reserve_frame(TMAC, other, 1, 2, 12, rcmd=1, macs=[other]))
            assert ch.recv(2.0) is not None
            ch.send(p.build_ata_frame(TMAC, ini.mac, 1, 2, 13, cmd=0x24, lba=0, scnt=1))
            r = ch.recv(2.0)
            assert r is not None and r[14] == 0x1C and r[15] == p.AoeError.TARGET_RESERVED
    finally:
        server.stop()
        thread.join(5)
        exp.close()
    assert not thread.is_alive()
    # Counters gathered from both paths: 64 writes, 64 + 1 reads (+1 out of range, +1 denied, +1 reserved).
    assert exp.bytes_written == 64 * 1024 and exp.bytes_read == 64 * 1024 + 512
    assert exp.errors == 2 and exp.denied == 1
    stats = server.transport.stats()
    assert "hot_path=c" in stats and "dropped=0" in stats


def test_cli_hot_path(tmp_path: Path, sockdir: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(64 * 512))
    result = CliRunner().invoke(serve_command, ["--export", f"1.2={disk}", "--transport", "x:y", "--hot-path", "z"])
    assert result.exit_code == 2 and "'z' is not one of 'auto', 'c', 'python'" in result.output


# -- batches: the C engine keeps the arrival order of a recvmmsg batch -----------------------------------------

A, B = POOL[0], POOL[1]


def _batches() -> list[list[bytes]]:
    """Control frames and READ/WRITEs in one batch: what C answers must depend on the frames before it."""
    def rw(tag: int, src: bytes, cmd: int, lba: int) -> bytes:
        data = bytes([tag]) * 512 if cmd == 0x34 else b""
        return p.build_ata_frame(TMAC, src, 1, 2, tag, cmd=cmd, lba=lba, scnt=1, aflags=0x41 if data else 0x40,
                                 data=data)  # fmt: skip

    mask = p.MaskDirective
    return [
        # Reserved by A: B's WRITE and READ get "reserved", the sector stays as it was.
        [p.build_reserve_frame(TMAC, A, 1, 2, 1, rcmd=1, macs=[A]), rw(2, B, 0x34, 5), rw(3, B, 0x24, 5)],
        # A releases, then takes B off the mask list: B's WRITE gets nothing; A's READ is answered.
        [p.build_reserve_frame(TMAC, A, 1, 2, 4, rcmd=1, macs=[]), rw(5, B, 0x34, 6),
         p.build_mask_frame(TMAC, A, 1, 2, 6, mcmd=1, directives=[(mask.DELETE, B)]), rw(7, B, 0x34, 7),
         rw(8, A, 0x24, 7)],
        # B back on the list: served again, in order.
        [rw(9, B, 0x34, 8), p.build_mask_frame(TMAC, A, 1, 2, 10, mcmd=1, directives=[(mask.ADD, B)]),
         rw(11, B, 0x34, 8), rw(12, B, 0x24, 8)],
    ]  # fmt: skip


def _run_batches(tmp_path: Path, sockdir: Path, hot_path: str) -> tuple[list[list[bytes]], bytes]:
    disk = tmp_path / f"{hot_path}.img"
    disk.write_bytes(bytes(range(256)) * 2 * 16)
    tsock, qsock = sockdir / f"{hot_path}-t.sock", sockdir / f"{hot_path}-q.sock"
    exp = OpenExport(ExportSpec(1, 2, disk), hostname="batch")
    target = Target([exp], TMAC, mac_allow=[A, B])
    server = ServeLoop(target, open_transport(f"unix-dgram:{tsock}:{qsock}", hot_path), announce_interval=None)
    assert server.transport.hot_path == hot_path
    answers = []
    try:
        with DgramChannel(qsock, tsock) as ch:
            for batch in _batches():
                for frame in batch:  # all queued before the target reads: one recvmmsg batch
                    ch.send(frame)
                server.transport._on_readable(0)  # what the server loop does when the socket is readable
                got = []
                while (r := ch.recv(0.2)) is not None:
                    got.append(r)
                answers.append(got)
    finally:
        server.close()
        exp.close()
    return answers, disk.read_bytes()


def test_batches_answered_in_arrival_order(tmp_path: Path, sockdir: Path) -> None:
    py_answers, py_disk = _run_batches(tmp_path, sockdir, "python")
    c_answers, c_disk = _run_batches(tmp_path, sockdir, "c")
    tags = [[p.parse_header(r).tag for r in batch] for batch in py_answers]
    assert tags == [[1, 2, 3], [4, 5, 6, 8], [10, 11, 12]]  # B off the mask list: WRITE 7 and 9 unanswered
    assert py_answers[0][1][15] == p.AoeError.TARGET_RESERVED
    assert c_answers == py_answers
    assert c_disk == py_disk


# -- group source addresses ----------------------------------------------------------------------------------------


def test_group_source_dropped_by_c(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(os.urandom(64 * 512))
    target = Target([OpenExport(ExportSpec(1, 2, disk))], TMAC)
    fast = fastpath.FastPath(target, -1)
    try:
        for src in (p.BROADCAST_MAC, bytes.fromhex("01005e000001"), bytes.fromhex("030000000001")):
            for cmd in (0x24, 0x34):
                frame = p.build_ata_frame(TMAC, src, 1, 2, 1, cmd=cmd, lba=0, scnt=1, aflags=cmd & 0x10 and 0x41,
                                          data=bytes(512) if cmd == 0x34 else b"")  # fmt: skip
                assert fast.answer(frame) is None
        fast.absorb()
        assert target.group_sources == 6 and target.exports[0].frames == 0
    finally:
        target.close()
    assert disk.read_bytes() != bytes(64 * 512)


# -- reconfiguring the engine while it runs ------------------------------------------------------------------------


def test_no_reconfiguration_while_running(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(os.urandom(64 * 512))
    exp = OpenExport(ExportSpec(1, 2, disk))
    target = Target([exp], TMAC)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    set_timeout(ours, socket.SO_RCVTIMEO, 0.05)
    set_timeout(ours, socket.SO_SNDTIMEO, 1.0)
    fast = fastpath.FastPath(target, ours.fileno())
    engine = fast.engine
    stop = threading.Event()
    read = p.build_ata_frame(TMAC, CLIENT, 1, 2, 1, cmd=0x24, lba=0, scnt=2)

    def client() -> None:  # keeps the engine busy reading exports and mask lists
        theirs.setblocking(False)
        while not stop.is_set():
            try:
                theirs.send(read)
            except (BlockingIOError, ConnectionRefusedError):
                pass
            try:
                while theirs.recv(8192):  # always read the replies: the engine's sends block otherwise
                    pass
            except BlockingIOError:
                pass

    results: list[int] = []

    def serve() -> None:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            results.append(engine.run(0.2)[0])

    threads = [threading.Thread(target=client), threading.Thread(target=serve)]
    for t in threads:
        t.start()
    refused = 0
    try:
        while threads[1].is_alive():
            for call in (lambda: engine.set_exports([(1, 2, exp.fd, 0, 64, False, True)]),
                         lambda: engine.set_access(0, b"", False), engine.take_counters):  # fmt: skip
                try:
                    call()
                except RuntimeError as e:
                    assert "running" in str(e)
                    refused += 1
    finally:
        threads[1].join(5)
        stop.set()
        threads[0].join(5)
        ours.close()
        theirs.close()
        target.close()
    assert results and refused > 0
    # Between runs, reconfiguring works.
    engine.set_access(0, b"", False)


def test_random_batches_differential(tmp_path: Path, sockdir: Path) -> None:
    """Random batches of the fuzz frames (control frames mixed with READ/WRITEs) through both hot paths over
    real sockets: the same replies, batch by batch, and the same files."""
    results = []
    for hot_path in ("python", "c"):
        rng = random.Random(SEED + 1)
        a, b = rng.randbytes(300 * 512), rng.randbytes(64 * 512)
        (tmp_path / hot_path).mkdir()
        pa, pb = tmp_path / hot_path / "a.img", tmp_path / hot_path / "b.img"
        pa.write_bytes(a)
        pb.write_bytes(b)
        exports = [
            OpenExport(ExportSpec(1, 2, pa, offset=20, length=200), hostname="fuzz"),
            OpenExport(ExportSpec(1, 3, pb, readonly=True), hostname="fuzz"),
        ]
        target = Target(exports, TMAC, mtu=9000)
        tsock, qsock = sockdir / f"{hot_path}-t.sock", sockdir / f"{hot_path}-q.sock"
        server = ServeLoop(target, open_transport(f"unix-dgram:{tsock}:{qsock}", hot_path), announce_interval=None)
        answers = []
        try:
            with DgramChannel(qsock, tsock) as ch:
                for i in range(250):
                    if i % 20 == 0:
                        _unlock(target)  # applied directly: the same on both sides
                        if server.transport._fast is not None:
                            server.transport._fast.sync_access()
                    batch = []
                    # At most 4 requests (up to 8 replies: broadcasts reach both exports), so that neither
                    # side's queue of net.unix.max_dgram_qlen (10) datagrams fills up.
                    for _ in range(rng.randrange(1, 5)):
                        kind = rng.random()
                        batch.append(_frame(rng, rng.getrandbits(32)) if kind < 0.5 else
                                     _rw_frame(rng, rng.getrandbits(32)))  # fmt: skip
                    ch.sock.settimeout(5.0)
                    for frame in batch:
                        # At most a jumbo frame: a few 128 KiB datagrams would fill the socket's send buffer
                        # before the target reads any (a longer WRITE becomes a runt, still a case to compare).
                        ch.sock.sendto(frame[:9014], ch.remote)
                    server.transport._on_readable(0)
                    got = []
                    while (r := ch.recv(0.002)) is not None:  # already sent: _on_readable returned
                        got.append(r)
                    answers.append(got)
        finally:
            server.close()
            target.close()
        results.append((answers, pa.read_bytes(), pb.read_bytes(), target.counters()))
    (py_answers, *py_rest), (c_answers, *c_rest) = results
    for i, (x, y) in enumerate(zip(py_answers, c_answers, strict=True)):
        assert x == y, f"batch {i}"
    assert py_rest == c_rest
    assert sum(len(x) for x in py_answers) > 300
