"""Fuzz the target with random, well-formed and mutated frames (seeded, reproducible).

A shadow copy of the backing file is updated only from writes the target acknowledged; every
successful read is checked against it, and at the end the whole file (including the bytes outside
the exported window) must equal the shadow and the target must still answer correctly.
"""

from __future__ import annotations

import random
import struct
import time
from pathlib import Path

from netbootgen.aoe import protocol as p
from netbootgen.aoe.store import ExportSpec, OpenExport
from netbootgen.aoe.target import Target

SEED = 0xA0E2024
FRAMES = 200_000
TMAC = bytes.fromhex("020000000102")
CLIENT = bytes.fromhex("525400123456")
POOL = [CLIENT] + [bytes((0x52, 0x54, 0, 0, 0, i)) for i in range(1, 6)]
FILE_SECTORS = 300
WINDOW_OFFSET = 20
WINDOW_SECTORS = 200  # e1.2 exports sectors 20..219 of a.img
RO_SECTORS = 64  # e1.3 exports b.img read-only
MTU = 9000  # 17 sectors per frame
ADDRS = [(1, 2), (1, 3), (0xFFFF, 0xFF), (1, 0xFF), (0xFFFF, 2), (1, 4), (2, 2)]
ATA_CMDS = [0x20, 0x24, 0x30, 0x34, 0x20, 0x24, 0x30, 0x34, 0xEC, 0xE7, 0xEA, 0xE5, 0xC8, 0x25, 0x00]


def _lba(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.6:
        return rng.randrange(0, WINDOW_SECTORS + 4)
    if r < 0.75:
        return WINDOW_SECTORS - rng.randrange(0, 20)
    if r < 0.85:
        return (0xE0 << 24) | rng.randrange(0, WINDOW_SECTORS)  # LBA28 with the device bits
    return rng.getrandbits(48)


def _frame(rng: random.Random, tag: int) -> bytes:
    """A mostly well-formed request."""
    dst = rng.choice([TMAC, TMAC, TMAC, p.BROADCAST_MAC, bytes.fromhex("020000000199")])
    src = rng.choice(POOL) if rng.random() < 0.97 else rng.randbytes(6)
    shelf, slot = rng.choice(ADDRS)
    verfl = 0x10 if rng.random() < 0.97 else rng.choice([0x00, 0x18, 0x1C, 0x20, 0x14])
    r = rng.random()
    if r < 0.90:
        cmd = rng.choice(ATA_CMDS)
        scnt = rng.choice([0, 1, 2, 2, 8, 17, 17, 18, 255]) if cmd != 0xEC else rng.choice([1, 1, 1, 0, 2])
        data = b""
        if cmd in (0x30, 0x34):
            n = scnt * 512 if rng.random() < 0.9 else rng.randrange(0, scnt * 512 + 1)
            data = rng.randbytes(n)
        aflags = rng.choice([0x00, 0x40, 0x41, 0x01, rng.getrandbits(8)])
        frame = p.build_header(dst, src, shelf, slot, 0, tag) + struct.pack(
            "<BBBB6s2s", aflags, rng.getrandbits(8), scnt, cmd, _lba(rng).to_bytes(6, "little"), b"\0\0"
        )
        return p.pad_frame(frame + data)
    hdr = p.build_header(dst, src, shelf, slot, 0, tag)[:14] + bytes((verfl, 0)) + struct.pack(">H", shelf)
    if r < 0.95:
        ccmd = rng.choice([0, 0, 1, 2, 3, 4, 5, 15])
        s = rng.choice([b"", b"a", b"abc", b"abcd", rng.randbytes(rng.randrange(0, 40))])
        n = len(s) if rng.random() < 0.9 else rng.choice([1024, 1025, 65535, len(s) + 1])
        return p.pad_frame(hdr + bytes((slot, 1)) + struct.pack(">IHHBBH", tag, 0, 0, 0, 0x10 | ccmd, n) + s)
    if r < 0.97:
        mcmd = rng.choice([0, 0, 1, 1, 1, 1, 1, 1, 2])
        m = rng.random()
        if m < 0.6:
            dirs = [(2, mac) for mac in POOL]  # clear the list
        elif m < 0.7:
            dirs = [(1, rng.choice(POOL))]
        else:
            dirs = [(rng.choice([0, 1, 2, 3, 9]), rng.choice(POOL)) for _ in range(rng.randrange(0, 5))]
        count = len(dirs) if rng.random() < 0.9 else rng.randrange(0, 256)
        body = b"".join(bytes((0, d)) + m for d, m in dirs)
        return p.pad_frame(
            hdr + bytes((slot, 2)) + struct.pack(">I", tag) + bytes((0, mcmd, 0, count)) + body
        )
    if r < 0.995:
        rcmd = rng.choice([0, 0, 1, 1, 2, 2, 3])
        macs = [rng.choice(POOL) for _ in range(rng.choice([0, 0, 0, 0, 1, 2]))]
        n = len(macs) if rng.random() < 0.9 else rng.randrange(0, 256)
        return p.pad_frame(
            hdr + bytes((slot, 3)) + struct.pack(">I", tag) + bytes((rcmd, n)) + b"".join(macs)
        )
    return p.pad_frame(
        hdr
        + bytes((slot, rng.choice([4, 5, 0x80, 0xF0, 0xFF])))
        + struct.pack(">I", tag)
        + rng.randbytes(20)
    )


def _mutate(rng: random.Random, frame: bytes) -> bytes:
    b = bytearray(frame)
    for _ in range(rng.randrange(1, 4)):
        op = rng.random()
        if op < 0.5 and b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif op < 0.7 and b:
            b[rng.randrange(min(len(b), 40))] = rng.getrandbits(8)
        elif op < 0.9:
            del b[rng.randrange(len(b) + 1) :]
        else:
            b += rng.randbytes(rng.randrange(1, 600))
    return bytes(b)


def _window_lba(frame: bytes) -> int:
    lba = int.from_bytes(frame[28:34], "little")
    return lba & 0x0FFFFFFF if frame[27] in (0x20, 0x30) else lba


def test_fuzz(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    a_path, b_path = tmp_path / "a.img", tmp_path / "b.img"
    a_path.write_bytes(rng.randbytes(FILE_SECTORS * 512))
    b_orig = rng.randbytes(RO_SECTORS * 512)
    b_path.write_bytes(b_orig)
    shadow = bytearray(a_path.read_bytes())
    base = WINDOW_OFFSET * 512

    rw = OpenExport(ExportSpec(1, 2, a_path, offset=WINDOW_OFFSET, length=WINDOW_SECTORS), hostname="fuzz")
    ro = OpenExport(ExportSpec(1, 3, b_path, readonly=True), hostname="fuzz")
    target = Target([rw, ro], TMAC, mtu=MTU)
    stats = {"writes": 0, "reads": 0, "replies": 0, "ata_errors": 0, "aoe_errors": 0}
    started = time.monotonic()
    last: bytes = b""
    try:
        for i in range(FRAMES):
            tag = rng.getrandbits(32)
            kind = rng.random()
            if kind < 0.15:
                frame = rng.randbytes(rng.randrange(0, 120))
            elif kind < 0.20:
                frame = p.build_header(TMAC, CLIENT, 1, 2, rng.getrandbits(8), tag) + rng.randbytes(
                    rng.randrange(0, 80)
                )
            elif kind < 0.45 and last:
                frame = _mutate(rng, last)
            else:
                frame = _frame(rng, tag)
            last = frame if len(frame) >= 24 else last
            replies = target.handle(frame)
            for r in replies:
                stats["replies"] += 1
                assert len(r) >= 60, i
                assert r[0:6] == frame[6:12] and r[6:12] == TMAC and r[12:14] == b"\x88\xa2", i
                assert r[14] in (0x18, 0x1C) and r[19] == frame[19] and r[20:24] == frame[20:24], i
                addr = struct.unpack_from(">HB", r, 16)
                assert addr in ((1, 2), (1, 3)), i
                if r[14] == 0x1C:
                    stats["aoe_errors"] += 1
                    continue
                if r[19] != 0:
                    continue
                status, cmd, scnt = r[27], frame[27], frame[26]
                if status != 0x40:
                    assert status == 0x41 and r[25] in (0x04, 0x10), i
                    stats["ata_errors"] += 1
                    continue
                if cmd not in (0x20, 0x24, 0x30, 0x34):
                    continue
                lba = _window_lba(frame)
                sectors = WINDOW_SECTORS if addr == (1, 2) else RO_SECTORS
                assert lba + scnt <= sectors, i  # never acknowledged outside the window
                assert scnt <= 17, i
                if cmd in (0x30, 0x34):
                    assert addr == (1, 2), i  # the read-only export never acknowledges a write
                    assert len(frame) >= 36 + scnt * 512, i
                    shadow[base + lba * 512 : base + (lba + scnt) * 512] = frame[36 : 36 + scnt * 512]
                    stats["writes"] += 1
                else:
                    assert len(r) == max(60, 36 + scnt * 512), i
                    if addr == (1, 2):
                        expect = bytes(shadow[base + lba * 512 : base + (lba + scnt) * 512])
                    else:
                        expect = b_orig[lba * 512 : (lba + scnt) * 512]
                    assert r[36 : 36 + scnt * 512] == expect, i
                    stats["reads"] += 1
        elapsed = time.monotonic() - started

        # Undo access control through the protocol, from a MAC the mask list accepts.
        for exp in (rw, ro):
            src = exp.masks[0] if exp.masks else CLIENT
            dirs = [(p.MaskDirective.DELETE, m) for m in exp.masks]
            (r,) = target.handle(
                p.build_mask_frame(TMAC, src, exp.shelf, exp.slot, 1, mcmd=1, directives=dirs)
            )
            assert r[27] == 0 and exp.masks == []
            (r,) = target.handle(p.build_reserve_frame(TMAC, CLIENT, exp.shelf, exp.slot, 2, rcmd=2))
            assert r[14] == 0x18 and exp.reservations == []

        # The target still answers correctly.
        q = p.build_config_frame(p.BROADCAST_MAC, CLIENT, 0xFFFF, 0xFF, 7)
        replies = target.handle(q)
        assert [struct.unpack_from(">HB", r, 16) for r in replies] == [(1, 2), (1, 3)]
        assert all(p.parse_config(r).scnt == 17 and p.parse_config(r).bufcnt == p.DEFAULT_BUFCNT for r in replies)
        (r,) = target.handle(p.build_ata_frame(TMAC, CLIENT, 1, 2, 8, cmd=0xEC, scnt=1))
        assert p.identify_capacity(r[36:]) == WINDOW_SECTORS
        window = b""
        for lba in range(0, WINDOW_SECTORS, 17):
            n = min(17, WINDOW_SECTORS - lba)
            (r,) = target.handle(p.build_ata_frame(TMAC, CLIENT, 1, 2, 9, cmd=0x24, lba=lba, scnt=n))
            assert r[27] == 0x40
            window += r[36 : 36 + n * 512]
        assert window == shadow[base : base + WINDOW_SECTORS * 512]
        data = bytes(range(256)) * 4
        (r,) = target.handle(
            p.build_ata_frame(TMAC, CLIENT, 1, 2, 10, cmd=0x34, lba=198, scnt=2, aflags=0x41, data=data)
        )
        assert r[27] == 0x40
        shadow[base + 198 * 512 : base + 200 * 512] = data
    finally:
        target.close()

    assert a_path.read_bytes() == shadow, "backing file differs from acknowledged writes"
    assert b_path.read_bytes() == b_orig, "read-only export was modified"
    # The fuzz must have exercised the interesting paths.
    assert stats["writes"] > 1000 and stats["reads"] > 1000, stats
    assert stats["ata_errors"] > 1000 and stats["aoe_errors"] > 100, stats
    assert elapsed < 20, f"fuzz took {elapsed:.1f}s"
