"""Copy-on-write exports (serve --export S.L=BASE,cow=OVERLAY): reads fall through to BASE, writes go to a
sparse overlay with an exact per-sector map, BASE is never modified, the overlay survives restarts."""

from __future__ import annotations

import hashlib
import os
import re
import struct
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from netbootgen.aoe import cow
from netbootgen.aoe import protocol as p
from netbootgen.aoe.command import inventory_plan
from netbootgen.aoe.process import ServeProcess
from netbootgen.aoe.store import ExportSpec, OpenExport, parse_export_spec
from netbootgen.aoe.target import Target
from netbootgen.errors import InputError, NetbootgenError
from netbootgen.export.vblade import render_units
from netbootgen.inventory import load_inventory
from netbootgen.testing.client import DgramChannel, Initiator, StreamChannel

SECTORS = 256
TMAC = bytes.fromhex("020000000102")
CLIENT = bytes.fromhex("525400123456")


def pattern(sectors: int, seed: int = 0) -> bytes:
    return b"".join(struct.pack("<II", i, seed) * 64 for i in range(sectors))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def base(tmp_path: Path) -> Path:
    path = tmp_path / "base.img"
    path.write_bytes(pattern(SECTORS))
    path.chmod(0o444)  # never written: even root's O_RDWR would succeed, so the checksum is the real check
    return path


def cow_export(base: Path, overlay: Path, **kw: int) -> OpenExport:
    return OpenExport(ExportSpec(1, 2, base, cow=overlay, **kw), hostname="testhost")  # type: ignore[arg-type]


def read(exp: OpenExport, lba: int, count: int) -> bytes:
    buf = bytearray(count * 512)
    assert exp.read_into(memoryview(buf), lba, count) == len(buf)
    return bytes(buf)


# -- parsing ---------------------------------------------------------------------------------------


def test_parse_cow_option() -> None:
    spec = parse_export_spec("1.2=/srv/golden.img,cow=/var/lib/m1.overlay,offset=8")
    assert spec == ExportSpec(1, 2, Path("/srv/golden.img"), offset=8, cow=Path("/var/lib/m1.overlay"))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("1.2=/b,cow=/o,ro", "ro and cow exclude each other"),
        ("1.2=/b,cow=", "unknown export option 'cow='"),
        ("1.2=/b,cow", "unknown export option 'cow'"),
        ("1.2=/b,cow=/o,cow=/p", "given twice"),
    ],
)
def test_parse_cow_errors(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_export_spec(text)


# -- the store -------------------------------------------------------------------------------------


def test_read_through_and_exact_sector_tracking(base: Path, tmp_path: Path) -> None:
    before = sha(base)
    overlay = tmp_path / "m1.overlay"
    with cow_export(base, overlay) as exp:
        assert exp.sectors == SECTORS and not exp.plain
        assert overlay.stat().st_size == SECTORS * 512
        assert overlay.stat().st_blocks == 0, "the overlay must start sparse"
        assert read(exp, 0, SECTORS) == pattern(SECTORS)
        # One 512-byte write in the middle of a 4 KiB block: only that sector comes from the overlay.
        new = b"\xaa" * 512
        assert exp.write_from(new, 13) == 512
        got = read(exp, 8, 8)
        assert got == pattern(16)[8 * 512 : 13 * 512] + new + pattern(16)[14 * 512 : 16 * 512]
        assert [exp.cow.written(s) for s in range(8, 16)] == [s == 13 for s in range(8, 16)]  # type: ignore[union-attr]
        # A write across a byte boundary of the map, then a read that alternates base/overlay runs.
        exp.write_from(b"\xbb" * 1024, 15)
        expect = bytearray(pattern(SECTORS))
        expect[13 * 512 : 14 * 512] = new
        expect[15 * 512 : 17 * 512] = b"\xbb" * 1024
        assert read(exp, 0, SECTORS) == bytes(expect)
        assert exp.cow.written_sectors() == 3  # type: ignore[union-attr]
    assert sha(base) == before


def test_overlay_persists_and_base_unchanged_across_reopen(base: Path, tmp_path: Path) -> None:
    before = sha(base)
    overlay = tmp_path / "m1.overlay"
    with cow_export(base, overlay) as exp:
        exp.write_from(b"\x01" * 512, 0)
        exp.write_from(b"\x02" * 512 * 3, SECTORS - 3)
    with cow_export(base, overlay) as exp:
        assert read(exp, 0, 2) == b"\x01" * 512 + pattern(2)[512:]
        assert read(exp, SECTORS - 4, 4) == pattern(SECTORS)[(SECTORS - 4) * 512 : (SECTORS - 3) * 512] + b"\x02" * 1536
    assert sha(base) == before
    # The documented map format: magic, sector count, bitmap at 4096, LSB first.
    raw = cow.map_path(overlay).read_bytes()
    assert raw[:8] == cow.MAGIC and struct.unpack_from("<Q", raw, 8)[0] == SECTORS
    bitmap = raw[cow.HEADER_SIZE :]
    assert len(bitmap) == SECTORS // 8
    assert bitmap[0] == 0x01 and bitmap[-1] == 0xE0 and not any(bitmap[1:-1])


def test_map_is_written_before_the_reply(base: Path, tmp_path: Path) -> None:
    """A target that dies without closing (SIGKILL) must not lose an acknowledged write: the map bytes are in
    the file (page cache) as soon as write_from returns."""
    overlay = tmp_path / "m1.overlay"
    exp = cow_export(base, overlay)
    exp.write_from(b"\x07" * 512, 9)
    assert cow.map_path(overlay).read_bytes()[cow.HEADER_SIZE + 1] == 0x02
    with cow_export(base, overlay) as again:  # opened while the first is still open, as after a crash
        assert read(again, 9, 1) == b"\x07" * 512
    exp.close()


def test_window_of_base(base: Path, tmp_path: Path) -> None:
    overlay = tmp_path / "w.overlay"
    with cow_export(base, overlay, offset=16, length=32) as exp:
        assert exp.sectors == 32 and overlay.stat().st_size == 32 * 512
        assert read(exp, 0, 1) == pattern(17)[16 * 512 :]
        exp.write_from(b"\x05" * 512, 31)
        assert read(exp, 31, 1) == b"\x05" * 512
        with pytest.raises(ValueError, match="outside"):
            exp.write_from(b"\x05" * 512, 32)
    # The same overlay with another window size is refused.
    with pytest.raises(ValueError, match="made for 32 sectors, the export has 64"):
        cow_export(base, overlay, offset=16, length=64)


def test_overlay_without_map_or_bad_map_refused(base: Path, tmp_path: Path) -> None:
    lone = tmp_path / "lone.overlay"
    lone.write_bytes(b"")
    with pytest.raises(ValueError, match="exists without its sector map"):
        cow_export(base, lone)
    bad = tmp_path / "bad.overlay"
    bad.write_bytes(b"")
    cow.map_path(bad).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="is not a netbootgen cow sector map"):
        cow_export(base, bad)
    with pytest.raises(ValueError, match="does not exist"):
        cow_export(base, tmp_path / "missing" / "x.overlay")


def test_cow_with_direct_refused(base: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not supported on a cow export"):
        OpenExport(ExportSpec(1, 2, base, cow=tmp_path / "o"), direct=True)


def test_overlaps(base: Path, tmp_path: Path) -> None:
    with (
        cow_export(base, tmp_path / "a.overlay") as a,
        cow_export(base, tmp_path / "b.overlay") as b,
        OpenExport(ExportSpec(1, 3, base, readonly=True)) as ro,
    ):
        assert not a.overlaps(b), "two machines' overlays on one golden base are what cow is for"
        assert not a.overlaps(ro) and not ro.overlaps(a)
    with cow_export(base, tmp_path / "a.overlay") as a, OpenExport(ExportSpec(1, 3, tmp_path / "a.overlay")) as raw:
        assert a.overlaps(raw) and raw.overlaps(a)
    base.chmod(0o644)
    with cow_export(base, tmp_path / "a.overlay") as a, OpenExport(ExportSpec(1, 3, base)) as rw:
        assert a.overlaps(rw) and rw.overlaps(a), "a writable export would change the base under the overlay"


# -- through the protocol engine ------------------------------------------------------------------


def test_target_identify_size_and_partial_block_write(base: Path, tmp_path: Path) -> None:
    before = sha(base)
    with cow_export(base, tmp_path / "t.overlay") as exp:
        target = Target([exp], TMAC)
        replies: list[bytes] = []

        def ata(cmd: int, lba: int = 0, scnt: int = 0, data: bytes = b"") -> p.AtaArgs:
            replies.clear()
            aflags = (p.AFLAG_EXT if cmd in (0x24, 0x34) else 0) | (p.AFLAG_WRITE if data else 0)
            frame = p.build_ata_frame(TMAC, CLIENT, 1, 2, 7, cmd=cmd, lba=lba, scnt=scnt, aflags=aflags, data=data)
            target.feed(frame, lambda out: replies.append(bytes(out)))
            assert len(replies) == 1
            return p.parse_ata(replies[0])

        ident = ata(p.AtaCommand.IDENTIFY_DEVICE, scnt=1)
        assert p.identify_capacity(ident.data[:512]) == SECTORS
        assert ata(p.AtaCommand.WRITE_SECTORS_EXT, 33, 1, b"\x77" * 512).cmd_status == 0x40
        got = ata(p.AtaCommand.READ_SECTORS_EXT, 32, 2)
        assert got.cmd_status == 0x40
        assert got.data[:1024] == pattern(33)[32 * 512 :] + b"\x77" * 512
        assert ata(p.AtaCommand.FLUSH_CACHE, 0, 0).cmd_status == 0x40
        assert ata(p.AtaCommand.WRITE_SECTORS_EXT, SECTORS, 1, b"\x77" * 512).cmd_status == 0x41
        assert (exp.bytes_written, exp.errors) == (512, 1)
    assert sha(base) == before


# -- netbootgen serve over the unix transports ----------------------------------------------------


def serve(tmp: Path, export: str, transport: str, *extra: str) -> ServeProcess:
    return ServeProcess(["--export", export, "--transport", transport, *extra], tmp / "serve.log")


@pytest.fixture
def transports(sockdir: Path) -> Iterator[dict[str, tuple[str, object]]]:
    t, q, s = sockdir / "t.sock", sockdir / "q.sock", sockdir / "s.sock"
    yield {
        "unix-dgram": (f"unix-dgram:{t}:{q}", lambda: DgramChannel(q, t)),
        "unix-stream": (f"unix-stream:{s}", lambda: StreamChannel(s)),
    }


@pytest.mark.parametrize(
    ("kind", "hot_path"), [("unix-dgram", "auto"), ("unix-dgram", "python"), ("unix-stream", "python")]
)
def test_serve_cow_persists_across_restarts(
    base: Path, tmp_path: Path, sockdir: Path, transports: dict[str, tuple[str, object]], kind: str, hot_path: str
) -> None:
    """With the C hot path (auto on unix-dgram) the engine hands the cow export's READ/WRITE back to Python."""
    before = sha(base)
    overlay = tmp_path / "m.overlay"
    address, channel = transports[kind]
    data = os.urandom(512)
    for round_ in range(2):
        with serve(sockdir, f"1.2={base},cow={overlay}", address, "--hot-path", hot_path) as proc:
            with channel() as ch:  # type: ignore[operator]
                ini = Initiator(ch)
                ini.query()
                assert p.identify_capacity(ini.identify()) == SECTORS
                if round_ == 0:
                    assert ini.read(40, 2) == pattern(42)[40 * 512 :]
                    ini.write(41, data)
                # Second round: a new process sees the first one's write; the neighbour is still BASE's.
                assert ini.read(40, 2) == pattern(41)[40 * 512 :] + data
            assert proc.stop() == 0
        assert f"cow={overlay}" in proc.output()
    assert sha(base) == before


def test_serve_cow_read_only_rejected(base: Path, tmp_path: Path, sockdir: Path) -> None:
    with pytest.raises(NetbootgenError, match="ro and cow exclude each other"):
        serve(sockdir, f"1.2={base},cow={tmp_path / 'o'},ro", f"unix-stream:{sockdir / 's.sock'}")


# -- the inventory: [exports.X] cow = "PATH" ------------------------------------------------------

NODE1, NODE2 = "52:54:00:12:34:56", "52:54:00:12:34:57"


def golden_inventory(tmp_path: Path, base: Path, extra1: str = "", extra2: str = "") -> Path:
    """Two machines booting one golden image, each through its own overlay."""
    inv = tmp_path / "inv.toml"
    inv.write_text(
        textwrap.dedent(
            f"""\
            [profiles.default]
            nic_drivers = {{ virtio_net = "m" }}

            [servers.store1]
            interface = "eth0"

            [exports.node1]
            server = "store1"
            shelf = 0
            slot = 1
            path = "{base}"
            cow = "{tmp_path}/node1.overlay"
            {extra1}

            [exports.node2]
            server = "store1"
            shelf = 0
            slot = 2
            path = "{base}"
            cow = "{tmp_path}/node2.overlay"
            {extra2}

            [machines.node1]
            macs = ["{NODE1}"]
            export = "node1"
            profile = "default"

            [machines.node2]
            macs = ["{NODE2}"]
            export = "node2"
            profile = "default"
            """
        )
    )
    return inv


def test_inventory_cow_plan_and_no_vblade_unit(base: Path, tmp_path: Path) -> None:
    inv = load_inventory(golden_inventory(tmp_path, base))
    assert inv.exports["node1"].cow == f"{tmp_path}/node1.overlay"
    plan = inventory_plan(inv, "store1")
    assert [e.spec.cow for e in plan.exports] == [tmp_path / "node1.overlay", tmp_path / "node2.overlay"]
    assert all(e.spec.path == base and not e.spec.readonly for e in plan.exports)
    assert render_units(inv) == {}, "vblade has no copy-on-write: cow exports get no unit"


@pytest.mark.parametrize(
    ("extra1", "extra2", "message"),
    [
        ("readonly = true", "", "exports.node1.readonly: cannot be combined with cow"),
        ("direct = true", "", "exports.node1.direct: cannot be combined with cow (O_DIRECT"),
        ("", 'cow = "relative"', "exports.node2.cow: 'relative' must be an absolute path"),
        ("", "cow = 5", "exports.node2.cow"),
    ],
)
def test_inventory_cow_errors(base: Path, tmp_path: Path, extra1: str, extra2: str, message: str) -> None:
    text = golden_inventory(tmp_path, base).read_text()
    if extra2.startswith("cow"):
        text = text.replace(f'cow = "{tmp_path}/node2.overlay"', extra2)
    else:
        text = text.replace(f'cow = "{tmp_path}/node1.overlay"', f'cow = "{tmp_path}/node1.overlay"\n{extra1}')
    (tmp_path / "inv.toml").write_text(text)
    with pytest.raises(InputError, match=re.escape(message)):
        load_inventory(tmp_path / "inv.toml")


def test_inventory_cow_overlay_shared_or_same_as_path(base: Path, tmp_path: Path) -> None:
    text = golden_inventory(tmp_path, base).read_text()
    shared = text.replace(f"{tmp_path}/node2.overlay", f"{tmp_path}/node1.overlay")
    (tmp_path / "inv.toml").write_text(shared)
    with pytest.raises(InputError, match=r"exports\.node2\.cow: .* is already the overlay of exports\.node1"):
        load_inventory(tmp_path / "inv.toml")
    (tmp_path / "inv.toml").write_text(text.replace(f"{tmp_path}/node1.overlay", os.fspath(base)))
    with pytest.raises(InputError, match=r"exports\.node1\.cow: .* is the export's path"):
        load_inventory(tmp_path / "inv.toml")


def test_serve_inventory_cow(base: Path, tmp_path: Path, sockdir: Path) -> None:
    """Each machine writes to its own overlay of the one golden image, which stays as it was."""
    before = sha(base)
    inv = golden_inventory(tmp_path, base)
    tsock, qsock = sockdir / "t.sock", sockdir / "q.sock"
    args = [os.fspath(inv), "--server", "store1", "--transport", f"unix-dgram:{tsock}:{qsock}"]
    with ServeProcess(args, sockdir / "serve.log") as proc, DgramChannel(qsock, tsock) as ch:
        for slot, mac, fill in ((1, NODE1, b"\x11"), (2, NODE2, b"\x22")):
            ini = Initiator(ch, mac=p.parse_mac(mac), shelf=0, slot=slot, timeout=3.0)
            ini.query()
            ini.write(3, fill * 512)
        for slot, mac, fill in ((1, NODE1, b"\x11"), (2, NODE2, b"\x22")):
            ini = Initiator(ch, mac=p.parse_mac(mac), shelf=0, slot=slot, timeout=3.0)
            ini.query()
            assert ini.read(2, 2) == pattern(3)[2 * 512 :] + fill * 512
        assert proc.stop() == 0, proc.output()
    assert sha(base) == before
    assert f"e0.1 -> {base} ({SECTORS} sectors, cow={tmp_path}/node1.overlay" in proc.output()
