"""The C hot path on unix-stream connections: the same replies, in the same order, and the same files as Python.

The engine answers the READ/WRITEs of a connection's receive buffer up to the first frame it hands back, then
Python answers that one and the engine goes on (netbootgen/aoe/stream.py). These tests drive the real
transport over a real unix stream connection with a byte stream cut into chunks at random places (several
frames per chunk, frames split across chunks, control frames between READ/WRITEs), once per hot path.
"""

from __future__ import annotations

import random
import selectors
import socket
import struct
from pathlib import Path

from test_aoe_fastpath import TMAC, A, B, _batches, _rw_frame, _unlock
from test_aoe_fuzz import CLIENT, _frame

from netbootgen.aoe import fastpath
from netbootgen.aoe import protocol as p
from netbootgen.aoe.server import ServeLoop, open_transport
from netbootgen.aoe.store import ExportSpec, OpenExport
from netbootgen.aoe.stream import STREAM_PENDING_LIMIT, UnixStreamTransport
from netbootgen.aoe.target import Target
from netbootgen.aoe.transport import MAX_FRAME

SEED = 0x57EA
_LEN = struct.Struct(">I")


def _prefixed(frames: list[bytes]) -> bytes:
    return b"".join(_LEN.pack(len(f)) + f for f in frames)


def _split(data: bytes) -> list[bytes]:
    """Length-prefixed frames back out of a byte stream (which must end at a frame boundary)."""
    frames, at = [], 0
    while at < len(data):
        (n,) = _LEN.unpack_from(data, at)
        frames.append(data[at + 4 : at + 4 + n])
        at += 4 + n
    assert at == len(data)
    return frames


class _Rig:
    """A target on a unix-stream transport and one connected client, driven by hand (no server thread): each
    chunk is sent, then the server's connection reads and answers it as the loop would, then the client takes
    every reply. A small send buffer on the server side makes back-pressure (`blocked`) happen."""

    def __init__(self, target: Target, path: Path, hot_path: str, sndbuf: int | None = None) -> None:
        self.server = ServeLoop(target, open_transport(f"unix-stream:{path}", hot_path), announce_interval=None)
        transport = self.server.transport
        assert isinstance(transport, UnixStreamTransport) and transport.hot_path == hot_path
        self.transport = transport
        self.client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.client.connect(str(path))
        transport._on_accept(0)
        (self.conn,) = transport._conns.values()
        if sndbuf is not None:
            self.conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        self.pending = b""
        self.blocked = 0
        self.announce = self.take()

    def take(self) -> list[bytes]:
        """Let the server finish (sending what back-pressure held back) and return the replies received."""
        got = b""
        while True:
            self.client.setblocking(False)
            try:
                while chunk := self.client.recv(1 << 20):
                    got += chunk
            except BlockingIOError:
                pass
            if self.conn.closed or not (self.conn.blocked or self.conn.out):
                break
            self.blocked += 1
            self.conn.on_event(selectors.EVENT_WRITE | selectors.EVENT_READ)
        data = self.pending + got
        frames, at = [], 0
        while len(data) - at >= 4 and len(data) - at - 4 >= _LEN.unpack_from(data, at)[0]:
            (n,) = _LEN.unpack_from(data, at)
            frames.append(data[at + 4 : at + 4 + n])
            at += 4 + n
        self.pending = data[at:]
        return frames

    def chunk(self, data: bytes) -> list[bytes]:
        self.client.setblocking(True)
        self.client.sendall(data)
        self.conn.on_event(selectors.EVENT_READ)  # what the loop does when the connection is readable
        return self.take()

    def close(self) -> None:
        self.client.close()
        self.server.close()


def _files(tmp_path: Path, name: str, seed: int) -> tuple[Path, Path]:
    rng = random.Random(seed)
    (tmp_path / name).mkdir()
    pa, pb = tmp_path / name / "a.img", tmp_path / name / "b.img"
    pa.write_bytes(rng.randbytes(300 * 512))
    pb.write_bytes(rng.randbytes(64 * 512))
    return pa, pb


def _random_stream(tmp_path: Path, sockdir: Path, hot_path: str) -> tuple[object, ...]:
    pa, pb = _files(tmp_path, hot_path, SEED)
    exports = [
        OpenExport(ExportSpec(1, 2, pa, offset=20, length=200), hostname="fuzz"),
        OpenExport(ExportSpec(1, 3, pb, readonly=True), hostname="fuzz"),
    ]
    target = Target(exports, TMAC, mtu=9000)
    rig = _Rig(target, sockdir / f"{hot_path}.sock", hot_path, sndbuf=16 << 10)
    rng = random.Random(SEED)
    answers = [rig.announce]
    try:
        for i in range(120):
            if i % 10 == 0:
                _unlock(target)  # applied directly, between chunks: the same on both sides
                if rig.transport._fast is not None:
                    rig.transport._fast.sync_access()
                # A burst of full-size READs (about 350 KB of replies): more than the send buffer takes.
                burst = [p.build_ata_frame(TMAC, CLIENT, 1, 2, n, cmd=0x24, lba=n, scnt=17) for n in range(40)]
                answers.append(rig.chunk(_prefixed(burst)))
            frames = []
            for _ in range(rng.randrange(1, 24)):
                kind = rng.random()
                frame = _frame(rng, rng.getrandbits(32)) if kind < 0.4 else _rw_frame(rng, rng.getrandbits(32))
                frames.append(frame[:9014])  # a longer WRITE becomes a runt: still a case to compare
            data = _prefixed(frames)
            cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(0, 6))))
            for lo, hi in zip([0, *cuts], [*cuts, len(data)], strict=True):
                answers.append(rig.chunk(data[lo:hi]))  # frames split across chunks, several frames per chunk
        # A length above MAX_FRAME closes the connection, after the frames before it in the same chunk.
        read = p.build_ata_frame(TMAC, CLIENT, 1, 2, 7, cmd=0x24, lba=0, scnt=2)
        answers.append(rig.chunk(_prefixed([read]) + _LEN.pack(MAX_FRAME + 1) + bytes(64)))
        closed = rig.conn.closed
        stats = rig.transport.stats()
    finally:
        rig.close()
        target.close()
    return answers, pa.read_bytes(), pb.read_bytes(), target.counters(), closed, rig.blocked, stats


def test_random_stream_differential(tmp_path: Path, sockdir: Path) -> None:
    py = _random_stream(tmp_path, sockdir, "python")
    c = _random_stream(tmp_path, sockdir, "c")
    py_answers, *py_files, py_closed, py_blocked, _ = py
    c_answers, *c_files, c_closed, c_blocked, c_stats = c
    assert isinstance(py_answers, list) and isinstance(c_answers, list)
    for i, (x, y) in enumerate(zip(py_answers, c_answers, strict=True)):
        assert x == y, f"chunk {i}"
    assert py_files == c_files
    assert py_closed and c_closed
    assert sum(len(x) for x in py_answers) > 1000
    assert py_blocked > 0 and c_blocked > 0  # back-pressure happened on both paths
    assert "hot_path=c" in str(c_stats) and "handed_to_python=0" not in str(c_stats)


def _ordered(tmp_path: Path, sockdir: Path, hot_path: str, split: bool) -> tuple[list[list[bytes]], bytes]:
    disk = tmp_path / f"{hot_path}-{split}.img"
    disk.write_bytes(bytes(range(256)) * 2 * 16)
    exp = OpenExport(ExportSpec(1, 2, disk), hostname="batch")
    target = Target([exp], TMAC, mac_allow=[A, B])
    rig = _Rig(target, sockdir / f"{hot_path}-{split}.sock", hot_path)
    answers = []
    try:
        for batch in _batches():
            data = _prefixed(batch)
            if split:  # chunks end inside every length prefix and just after it: C stops at the incomplete frame
                bounds = [0]
                for frame in batch:
                    bounds += [bounds[-1] + 2, bounds[-1] + 5, bounds[-1] + 4 + len(frame)]
                answers.append([r for lo, hi in zip(bounds, bounds[1:], strict=False) for r in rig.chunk(data[lo:hi])])
            else:
                answers.append(rig.chunk(data))
    finally:
        rig.close()
        exp.close()
    return answers, disk.read_bytes()


def test_control_frames_take_effect_in_order(tmp_path: Path, sockdir: Path) -> None:
    """The reorder cases of the datagram engine (reserve, mask list edits between WRITEs) in one chunk, and byte
    by byte: C must not answer a READ/WRITE before Python has applied the control frame in front of it."""
    for split in (False, True):
        py_answers, py_disk = _ordered(tmp_path, sockdir, "python", split)
        c_answers, c_disk = _ordered(tmp_path, sockdir, "c", split)
        assert [[p.parse_header(r).tag for r in batch] for batch in py_answers] == [[1, 2, 3], [4, 5, 6, 8],
                                                                                   [10, 11, 12]]  # fmt: skip
        assert c_answers == py_answers
        assert c_disk == py_disk


def test_engine_stream_call(tmp_path: Path) -> None:
    """FastPath.stream alone: stops at an incomplete frame, at a frame for Python and at a bad length; drops a
    reply while `out` is over the limit, as stream.py's _collect does."""
    disk = tmp_path / "disk.img"
    disk.write_bytes(random.Random(1).randbytes(64 * 512))
    target = Target([OpenExport(ExportSpec(1, 2, disk))], TMAC)
    fast = fastpath.FastPath(target)
    src = p.parse_mac("52:54:00:12:34:56")
    read = p.build_ata_frame(TMAC, src, 1, 2, 1, cmd=0x24, lba=3, scnt=2)
    ident = p.build_ata_frame(TMAC, src, 1, 2, 2, cmd=0xEC, lba=0, scnt=1)
    try:
        buf = bytearray(_prefixed([read, read, ident, read]))
        out = bytearray(b"xy")
        stop, answered = fast.stream(buf, 0, len(buf) - 1, out, STREAM_PENDING_LIMIT)
        assert (stop, answered) == (2 * (4 + len(read)), 2)  # IDENTIFY is Python's
        assert out[:2] == b"xy" and _split(bytes(out[2:])) == [fast.answer(read)] * 2
        assert _split(bytes(out[2:]))[0][36:] == disk.read_bytes()[3 * 512 : 5 * 512]
        rest = stop + 4 + len(ident)
        assert fast.stream(buf, rest, len(buf) - 1, out, STREAM_PENDING_LIMIT) == (rest, 0)  # incomplete
        full = bytearray(b"z" * 100)
        assert fast.stream(buf, rest, len(buf), full, 99) == (len(buf), 1)  # answered, reply dropped
        assert full == b"z" * 100
        bad = bytearray(_LEN.pack(MAX_FRAME + 1) + bytes(64))
        assert fast.stream(bad, 0, len(bad), out, STREAM_PENDING_LIMIT) == (0, 0)
        stats = fast.stats()
        assert stats["dropped"] == 1 and stats["replies"] == 2 and stats["handed_over"] == 1
        fast.absorb()
        assert target.exports[0].frames == 4 and target.exports[0].bytes_read == 4 * 1024  # with answer() above
    finally:
        target.close()
