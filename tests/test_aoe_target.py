"""Target state machine: every AoE command, flag and error path, checked byte by byte."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netbootgen.aoe import protocol as p
from netbootgen.aoe.store import ExportSpec, OpenExport, parse_export_spec
from netbootgen.aoe.target import Target

CLIENT = bytes.fromhex("525400123456")
OTHER = bytes.fromhex("525400abcdef")
TMAC = bytes.fromhex("020000000102")
SECTORS = 256


def pattern(sectors: int, seed: int = 0) -> bytes:
    """Distinct content per sector: sector number and seed repeated."""
    return b"".join(struct.pack("<II", i, seed) * 64 for i in range(sectors))


def make_file(path: Path, sectors: int = SECTORS, seed: int = 0) -> Path:
    path.write_bytes(pattern(sectors, seed))
    return path


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    return make_file(tmp_path / "disk.img")


@pytest.fixture
def export(disk: Path) -> Iterator[OpenExport]:
    with OpenExport(ExportSpec(1, 2, disk), hostname="testhost") as exp:
        yield exp


@pytest.fixture
def target(export: OpenExport) -> Target:
    return Target([export], TMAC)


def hdr(
    cmd: int,
    tag: int = 0x11223344,
    *,
    dst: bytes = TMAC,
    src: bytes = CLIENT,
    shelf: int = 1,
    slot: int = 2,
    verfl: int = 0x10,
    error: int = 0,
) -> bytes:
    return (
        dst
        + src
        + b"\x88\xa2"
        + bytes((verfl, error))
        + struct.pack(">HBB", shelf, slot, cmd)
        + struct.pack(">I", tag)
    )


def ata(
    cmd: int,
    lba: int = 0,
    scnt: int = 0,
    data: bytes = b"",
    *,
    aflags: int | None = None,
    feature: int = 0,
    tag: int = 0x11223344,
    **kw: Any,
) -> bytes:
    if aflags is None:
        aflags = (0x40 if cmd in (0x24, 0x34) else 0) | (0x01 if cmd in (0x30, 0x34) else 0)
    frame = (
        hdr(0, tag, **kw) + bytes((aflags, feature, scnt, cmd)) + lba.to_bytes(6, "little") + b"\0\0" + data
    )
    return frame.ljust(60, b"\0")


def reply_hdr(
    cmd: int, tag: int = 0x11223344, *, dst: bytes = CLIENT, shelf: int = 1, slot: int = 2, error: int = 0
) -> bytes:
    verfl = 0x1C if error else 0x18
    return (
        dst
        + TMAC
        + b"\x88\xa2"
        + bytes((verfl, error))
        + struct.pack(">HBB", shelf, slot, cmd)
        + struct.pack(">I", tag)
    )


def one(target: Target, frame: bytes) -> bytes:
    replies = target.handle(frame)
    assert len(replies) == 1, replies
    return replies[0]


def sectors_of(path: Path, lba: int, count: int) -> bytes:
    return path.read_bytes()[lba * 512 : (lba + count) * 512]


# -- Query Config --------------------------------------------------------------------------------


def test_query_config_broadcast_reply_bytes(target: Target) -> None:
    q = hdr(1, 0, dst=b"\xff" * 6, shelf=0xFFFF, slot=0xFF) + bytes(8)
    r = one(target, q.ljust(60, b"\0"))
    expected = reply_hdr(1, 0) + b"\x00\x40" + b"\x01\x00" + b"\x02" + b"\x10" + b"\x00\x00"
    assert r == expected.ljust(60, b"\0")


@pytest.mark.parametrize(("mtu", "scnt"), [(1500, 2), (9000, 17), (100000, 195), (200000, 255), (548, 1)])
def test_query_config_scnt_from_mtu(export: OpenExport, mtu: int, scnt: int) -> None:
    target = Target([export], TMAC, mtu=mtu, bufcnt=64)
    r = one(target, hdr(1).ljust(60, b"\0"))
    assert r[24:26] == b"\x00\x40"
    assert r[28] == scnt


def test_config_set_test_prefix_force(target: Target) -> None:
    def cfg(ccmd: int, s: bytes, tag: int = 5) -> list[bytes]:
        return target.handle(hdr(1, tag) + struct.pack(">HHBBH", 0, 0, 0, 0x10 | ccmd, len(s)) + s)

    # Set on an empty string succeeds and echoes the new string with ccmd 3.
    (r,) = cfg(3, b"host=a")
    assert r[14:16] == b"\x18\x00"
    assert r[29] == 0x13 and r[30:32] == b"\x00\x06" and r[32:38] == b"host=a"
    # Read returns it (ccmd 0, length ignored).
    (r,) = cfg(0, b"")
    assert r[29] == 0x10 and r[32:38] == b"host=a"
    # Test: exact match replies, anything else is silent.
    assert len(cfg(1, b"host=a")) == 1
    assert cfg(1, b"host=") == []
    assert cfg(1, b"host=ab") == []
    # Prefix test.
    assert len(cfg(2, b"host=")) == 1
    assert len(cfg(2, b"")) == 1
    assert cfg(2, b"other") == []
    # Set with the identical string is fine; a different one gives error 4 with the current string.
    assert cfg(3, b"host=a")[0][14:16] == b"\x18\x00"
    (r,) = cfg(3, b"host=b", tag=77)
    assert r[14:16] == b"\x1c\x04" and r[20:24] == struct.pack(">I", 77)
    assert r[29] == 0x13 and r[32:38] == b"host=a"
    # Force set always wins.
    (r,) = cfg(4, b"forced")
    assert r[14:16] == b"\x18\x00" and r[32:38] == b"forced"
    assert target.exports[0].config == b"forced"


@pytest.mark.parametrize("ccmd", [5, 6, 15])
def test_config_bad_ccmd_error_2(target: Target, ccmd: int) -> None:
    r = one(target, hdr(1) + struct.pack(">HHBBH", 0, 0, 0, 0x10 | ccmd, 0) + bytes(28))
    assert r[14:16] == b"\x1c\x02"
    assert r[29] == 0x10 | ccmd


def test_config_oversized_or_truncated_string_ignored(target: Target) -> None:
    big = b"x" * 1025
    assert target.handle(hdr(1) + struct.pack(">HHBBH", 0, 0, 0, 0x14, 1025) + big) == []
    # Length field larger than the payload.
    assert target.handle(hdr(1) + struct.pack(">HHBBH", 0, 0, 0, 0x13, 100) + b"abc") == []
    # Read ignores the length field.
    assert len(target.handle(hdr(1) + struct.pack(">HHBBH", 0, 0, 0, 0x10, 1000))) == 1
    assert target.exports[0].config == b""


def test_config_max_string(target: Target) -> None:
    s = bytes(range(256)) * 4
    (r,) = target.handle(hdr(1) + struct.pack(">HHBBH", 0, 0, 0, 0x14, 1024) + s)
    assert r[30:32] == b"\x04\x00" and r[32:] == s


def test_announce_broadcast(target: Target) -> None:
    (a,) = target.announce()
    expected = reply_hdr(1, 0, dst=b"\xff" * 6) + b"\x00\x40\x01\x00\x02\x10\x00\x00"
    assert a == expected.ljust(60, b"\0")


def test_announce_unicast_to_allowed_macs(export: OpenExport) -> None:
    target = Target([export], TMAC, mac_allow=[CLIENT, OTHER])
    frames = target.announce()
    assert [f[:6] for f in frames] == [CLIENT, OTHER]
    assert all(f[6:12] == TMAC and f[14] == 0x18 and f[19] == 1 for f in frames)


def test_announce_carries_config_string(target: Target) -> None:
    target.exports[0].config = b"cfg"
    (a,) = target.announce()
    assert a[30:35] == b"\x00\x03cfg"


# -- ATA -----------------------------------------------------------------------------------------


def test_identify(target: Target) -> None:
    r = one(target, ata(0xEC, lba=0xA0 << 24, scnt=1, aflags=0))
    assert len(r) == 36 + 512
    assert r[:24] == reply_hdr(0)
    assert r[24:28] == b"\x00\x00\x00\x40"  # aflags echoed, err 0, scnt 0, status DRDY
    assert r[28:34] == (0xA0 << 24).to_bytes(6, "little")
    page = r[36:]
    assert page == p.build_identify(SECTORS, serial="1.2:testhost")
    assert p.identify_capacity(page) == SECTORS
    assert p.parse_ata_string(page[20:40]) == "1.2:testhost"
    assert struct.unpack_from("<H", page, 83 * 2)[0] == 0x5400
    assert struct.unpack_from("<H", page, 86 * 2)[0] == 0x1400


@pytest.mark.parametrize("scnt", [0, 2])
def test_identify_needs_scnt_1(target: Target, scnt: int) -> None:
    r = one(target, ata(0xEC, scnt=scnt))
    assert r[14:16] == b"\x1c\x02" and len(r) == 60


@pytest.mark.parametrize(
    ("cmd", "lba_field", "lba"),
    [
        (0x24, 100, 100),
        (0x20, 100, 100),
        (0x20, 0xE0 << 24 | 37, 37),
        (0x20, 0x1234 << 32 | 0xE0 << 24 | 5, 5),
    ],
)
def test_read(target: Target, disk: Path, cmd: int, lba_field: int, lba: int) -> None:
    r = one(target, ata(cmd, lba_field, 2, tag=0xDEADBEEF))
    assert len(r) == 36 + 1024
    assert r[:24] == reply_hdr(0, 0xDEADBEEF)
    assert r[24:28] == bytes((0x40 if cmd == 0x24 else 0, 0, 0, 0x40))
    assert r[28:34] == lba_field.to_bytes(6, "little")
    assert r[36:] == sectors_of(disk, lba, 2)
    assert target.exports[0].bytes_read == 1024


def test_read_48bit_lba_out_of_range(target: Target) -> None:
    r = one(target, ata(0x24, 1 << 40, 1))
    assert len(r) == 60 and r[24:28] == b"\x40\x10\x01\x41"


@pytest.mark.parametrize(
    ("lba", "scnt"), [(SECTORS, 1), (SECTORS - 1, 2), (SECTORS + 100, 2), ((1 << 48) - 1, 2)]
)
def test_read_out_of_range_idnf(target: Target, lba: int, scnt: int) -> None:
    r = one(target, ata(0x24, lba, scnt))
    assert len(r) == 60
    assert r[14:16] == b"\x18\x00"
    assert r[25] == 0x10 and r[27] == 0x41  # IDNF, DRDY|ERR
    assert r[36:] == bytes(24)
    assert target.exports[0].errors == 1


def test_read_last_sectors(target: Target, disk: Path) -> None:
    r = one(target, ata(0x24, SECTORS - 2, 2))
    assert r[27] == 0x40 and r[36:] == sectors_of(disk, SECTORS - 2, 2)


def test_read_zero_sectors(target: Target) -> None:
    r = one(target, ata(0x24, 0, 0))
    assert len(r) == 60 and r[27] == 0x40


def test_read_too_many_sectors_is_aoe_error(target: Target) -> None:
    r = one(target, ata(0x24, 0, 3))  # MTU 1500 -> at most 2
    assert r[14:16] == b"\x1c\x02"


@pytest.mark.parametrize(
    ("cmd", "lba_field", "lba"), [(0x34, 7, 7), (0x30, 9, 9), (0x30, 0xE0 << 24 | 11, 11)]
)
def test_write(target: Target, disk: Path, cmd: int, lba_field: int, lba: int) -> None:
    before = disk.read_bytes()
    data = bytes(range(256)) * 4
    r = one(target, ata(cmd, lba_field, 2, data, tag=42))
    assert r == (
        reply_hdr(0, 42)
        + bytes((0x41 if cmd == 0x34 else 0x01, 0, 0, 0x40))
        + lba_field.to_bytes(6, "little")
        + b"\0\0"
    ).ljust(60, b"\0")
    after = disk.read_bytes()
    assert after[lba * 512 : lba * 512 + 1024] == data
    assert (
        after[: lba * 512] == before[: lba * 512] and after[lba * 512 + 1024 :] == before[lba * 512 + 1024 :]
    )
    assert target.exports[0].bytes_written == 1024


def test_write_then_read_back(target: Target) -> None:
    data = os.urandom(1024)
    one(target, ata(0x34, 50, 2, data))
    assert one(target, ata(0x24, 50, 2))[36:] == data


@pytest.mark.parametrize(("lba", "scnt"), [(SECTORS - 1, 2), (SECTORS, 1), (1 << 47, 2)])
def test_write_out_of_range_idnf_and_no_io(target: Target, disk: Path, lba: int, scnt: int) -> None:
    before = disk.read_bytes()
    r = one(target, ata(0x34, lba, scnt, b"\xee" * 512 * scnt))
    assert r[25] == 0x10 and r[27] == 0x41
    assert disk.read_bytes() == before
    assert os.path.getsize(disk) == SECTORS * 512


def test_runt_write_is_ignored(target: Target, disk: Path) -> None:
    before = disk.read_bytes()
    assert target.handle(ata(0x34, 0, 2, b"\xee" * 1023)) == []
    assert target.handle(ata(0x34, 0, 1)) == []  # padded to 60: 24 bytes of data < 512
    assert disk.read_bytes() == before


def test_write_larger_frame_uses_only_scnt_sectors(target: Target, disk: Path) -> None:
    before = disk.read_bytes()
    one(target, ata(0x34, 3, 1, b"\x11" * 512 + b"\x22" * 512))
    after = disk.read_bytes()
    assert after[3 * 512 : 4 * 512] == b"\x11" * 512 and after[4 * 512 :] == before[4 * 512 :]


def test_write_readonly_aborts(disk: Path) -> None:
    before = disk.read_bytes()
    with OpenExport(ExportSpec(1, 2, disk, readonly=True)) as exp:
        target = Target([exp], TMAC)
        r = one(target, ata(0x34, 0, 1, b"\xee" * 512))
        assert r[25] == 0x04 and r[27] == 0x41 and len(r) == 60
        r = one(target, ata(0x30, 0, 1, b"\xee" * 512))
        assert r[25] == 0x04 and r[27] == 0x41
        assert one(target, ata(0x24, 0, 1))[27] == 0x40  # reads still work
    assert disk.read_bytes() == before


@pytest.mark.parametrize("cmd", [0xE7, 0xEA])
def test_flush(target: Target, cmd: int) -> None:
    r = one(target, ata(cmd))
    assert r[24:28] == bytes((0, 0, 0, 0x40)) and len(r) == 60


def test_check_power_mode(target: Target) -> None:
    assert one(target, ata(0xE5))[24:28] == b"\x00\x00\xff\x40"


@pytest.mark.parametrize("cmd", [0x00, 0xC8, 0xCA, 0x25, 0x35, 0xEF, 0xF8, 0xFF])
def test_unknown_ata_command_aborts(target: Target, cmd: int) -> None:
    r = one(target, ata(cmd, 5, 1, feature=3))
    assert r[14:16] == b"\x18\x00"
    assert r[24:28] == bytes((0, 0x04, 1, 0x41))
    assert r[28:34] == (5).to_bytes(6, "little")


def test_short_ata_frame_ignored(target: Target) -> None:
    assert target.handle(ata(0x24, 0, 1)[:35]) == []
    assert len(target.handle(ata(0x24, 0, 0)[:36])) == 1


# -- windows -------------------------------------------------------------------------------------


def test_window_offset_length(tmp_path: Path) -> None:
    disk = make_file(tmp_path / "big.img", 1000)
    before = disk.read_bytes()
    with OpenExport(ExportSpec(3, 4, disk, offset=100, length=50)) as exp:
        assert exp.sectors == 50
        target = Target([exp], TMAC)
        r = one(target, ata(0x24, 0, 2, shelf=3, slot=4))
        assert r[36:] == before[100 * 512 : 102 * 512]
        r = one(target, ata(0xEC, 0, 1, shelf=3, slot=4))
        assert p.identify_capacity(r[36:]) == 50
        one(target, ata(0x34, 48, 2, b"\x77" * 1024, shelf=3, slot=4))
        assert one(target, ata(0x34, 49, 2, b"\x66" * 1024, shelf=3, slot=4))[25] == 0x10
        assert one(target, ata(0x24, 50, 1, shelf=3, slot=4))[25] == 0x10
    after = disk.read_bytes()
    assert after[148 * 512 : 150 * 512] == b"\x77" * 1024
    assert after[: 148 * 512] == before[: 148 * 512] and after[150 * 512 :] == before[150 * 512 :]


def test_window_offset_only(tmp_path: Path) -> None:
    disk = make_file(tmp_path / "big.img", 100)
    with OpenExport(ExportSpec(3, 4, disk, offset=90)) as exp:
        assert exp.sectors == 10


def test_window_errors(tmp_path: Path) -> None:
    disk = make_file(tmp_path / "d.img", 100)
    with pytest.raises(ValueError, match="beyond the end"):
        OpenExport(ExportSpec(1, 1, disk, offset=100))
    with pytest.raises(ValueError, match="exceeds the size"):
        OpenExport(ExportSpec(1, 1, disk, offset=10, length=91))
    empty = tmp_path / "empty.img"
    empty.write_bytes(b"\0" * 511)
    with pytest.raises(ValueError, match="beyond the end"):
        OpenExport(ExportSpec(1, 1, empty))
    with pytest.raises(FileNotFoundError):
        OpenExport(ExportSpec(1, 1, tmp_path / "missing.img"))
    with pytest.raises(IsADirectoryError):
        OpenExport(ExportSpec(1, 1, tmp_path))
    with pytest.raises(ValueError, match="not a regular file"):
        OpenExport(ExportSpec(1, 1, tmp_path, readonly=True))


def test_partial_last_sector_not_exported(tmp_path: Path) -> None:
    disk = tmp_path / "odd.img"
    disk.write_bytes(b"\1" * (10 * 512 + 100))
    with OpenExport(ExportSpec(1, 1, disk)) as exp:
        assert exp.sectors == 10


def test_overlaps(tmp_path: Path) -> None:
    disk = make_file(tmp_path / "d.img", 100)
    other = make_file(tmp_path / "o.img", 100)
    with (
        OpenExport(ExportSpec(1, 1, disk, offset=0, length=50)) as a,
        OpenExport(ExportSpec(1, 2, disk, offset=50)) as b,
        OpenExport(ExportSpec(1, 3, tmp_path / "." / "d.img", offset=49, length=2)) as c,
        OpenExport(ExportSpec(1, 4, other)) as d,
    ):
        assert not a.overlaps(b) and not b.overlaps(a)
        assert a.overlaps(c) and b.overlaps(c)
        assert not a.overlaps(d)


def test_direct_io(tmp_path: Path) -> None:
    disk = make_file(tmp_path / "d.img", 64)
    try:
        exp = OpenExport(ExportSpec(1, 2, disk, offset=3), direct=True)
    except OSError as e:
        pytest.skip(f"O_DIRECT unsupported here: {e}")
    with exp:
        target = Target([exp], TMAC, mtu=9000)
        data = os.urandom(17 * 512)
        assert one(target, ata(0x34, 1, 17, data))[27] == 0x40
        assert one(target, ata(0x24, 1, 17))[36:] == data
    assert disk.read_bytes()[4 * 512 : 21 * 512] == data


def test_sync_io(tmp_path: Path) -> None:
    disk = make_file(tmp_path / "d.img", 8)
    with OpenExport(ExportSpec(1, 2, disk), sync=True) as exp:
        target = Target([exp], TMAC)
        assert one(target, ata(0x34, 0, 1, b"\x55" * 512))[27] == 0x40
    assert disk.read_bytes()[:512] == b"\x55" * 512


def test_io_error_reports_abort(target: Target, disk: Path) -> None:
    os.truncate(disk, 10 * 512)  # shrink under the target's feet: reads come back short
    r = one(target, ata(0x24, 100, 2))
    assert r[25] == 0x04 and r[27] == 0x41 and len(r) == 60


# -- addressing and filtering --------------------------------------------------------------------


def test_tag_echoed_including_high_bit(target: Target) -> None:
    for tag in (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF):
        assert one(target, ata(0xEC, 0, 1, tag=tag))[20:24] == struct.pack(">I", tag)


@pytest.mark.parametrize(("shelf", "slot"), [(1, 2), (0xFFFF, 2), (1, 0xFF), (0xFFFF, 0xFF)])
def test_addressing_matches(target: Target, shelf: int, slot: int) -> None:
    r = one(target, ata(0xEC, 0, 1, shelf=shelf, slot=slot))
    assert r[16:19] == b"\x00\x01\x02"  # always the export's own address


@pytest.mark.parametrize(("shelf", "slot"), [(1, 3), (2, 2), (0xFFFF, 3), (2, 0xFF), (0, 0)])
def test_other_address_ignored(target: Target, shelf: int, slot: int) -> None:
    assert target.handle(ata(0xEC, 0, 1, shelf=shelf, slot=slot)) == []


def test_broadcast_dst_accepted_other_unicast_ignored(target: Target) -> None:
    assert len(target.handle(ata(0xEC, 0, 1, dst=b"\xff" * 6))) == 1
    assert target.handle(ata(0xEC, 0, 1, dst=bytes.fromhex("020000000103"))) == []


@pytest.mark.parametrize("src", ["ffffffffffff", "01005e000001", "333300000001", "030000000001"])
def test_group_source_dropped(target: Target, disk: Path, src: str) -> None:
    # A reply would carry sector data to every station of the group: the target would be a reflector.
    before = disk.read_bytes()
    group = bytes.fromhex(src)
    for frame in (ata(0x24, 0, 1, src=group), ata(0x34, 0, 1, b"\1" * 512, src=group), ata(0xEC, 0, 1, src=group),
                  hdr(1, src=group) + bytes(8), hdr(3, src=group) + bytes(2)):  # fmt: skip
        assert target.handle(frame) == []
        assert target.handle(b"\xff" * 6 + frame[6:]) == []  # to broadcast as well
    assert disk.read_bytes() == before
    assert target.group_sources == 10 and target.exports[0].frames == 0


def test_broadcast_read_answered_once_per_export_and_counted(disk: Path, tmp_path: Path) -> None:
    other = make_file(tmp_path / "other.img", seed=1)
    with OpenExport(ExportSpec(1, 2, disk)) as a, OpenExport(ExportSpec(1, 3, other)) as b:
        target = Target([a, b], TMAC)
        replies = target.handle(ata(0x24, 0, 1, dst=b"\xff" * 6, shelf=0xFFFF, slot=0xFF))
        assert sorted(r[36:548] for r in replies) == sorted([sectors_of(disk, 0, 1), sectors_of(other, 0, 1)])
        one(target, ata(0x24, 0, 1))
        assert (a.broadcast, b.broadcast) == (1, 1)
        assert "broadcast=1" in a.format_counters()


def test_response_flag_ignored(target: Target) -> None:
    assert target.handle(ata(0xEC, 0, 1, verfl=0x18)) == []
    assert target.handle(ata(0xEC, 0, 1, verfl=0x1C)) == []
    assert target.announce()[0] and target.handle(target.announce()[0]) == []


def test_other_ethertype_ignored(target: Target) -> None:
    frame = bytearray(ata(0xEC, 0, 1))
    frame[12:14] = b"\x08\x00"
    assert target.handle(bytes(frame)) == []


@pytest.mark.parametrize("length", [0, 1, 13, 14, 23])
def test_short_frames_ignored(target: Target, length: int) -> None:
    assert target.handle(ata(0xEC, 0, 1)[:length]) == []


@pytest.mark.parametrize("verfl", [0x00, 0x20, 0xF0])
def test_unsupported_version_error_5(target: Target, verfl: int) -> None:
    r = one(target, ata(0xEC, 0, 1, verfl=verfl))
    assert r[:24] == reply_hdr(0, error=5)
    assert len(r) == 60 and r[24:] == bytes(36)


@pytest.mark.parametrize("cmd", [4, 0x7F, 0xF0, 0xFF])
def test_unknown_aoe_command_echoed_with_error_1(target: Target, cmd: int) -> None:
    frame = hdr(cmd, 99) + bytes(range(100))
    r = one(target, frame)
    assert r == reply_hdr(cmd, 99, error=1) + bytes(range(100))


def test_multiple_exports(tmp_path: Path) -> None:
    a = make_file(tmp_path / "a.img", 16, seed=1)
    b = make_file(tmp_path / "b.img", 32, seed=2)
    with (
        OpenExport(ExportSpec(1, 2, a)) as ea,
        OpenExport(ExportSpec(1, 3, b)) as eb,
        OpenExport(ExportSpec(7, 2, b, readonly=True)) as ec,
    ):
        target = Target([ea, eb, ec], TMAC)
        q = hdr(1, 5, dst=b"\xff" * 6, shelf=0xFFFF, slot=0xFF).ljust(60, b"\0")
        replies = target.handle(q)
        assert [r[16:19] for r in replies] == [b"\x00\x01\x02", b"\x00\x01\x03", b"\x00\x07\x02"]
        assert [r[20:24] for r in replies] == [struct.pack(">I", 5)] * 3
        assert [r[16:19] for r in target.handle(hdr(1, 5, shelf=1, slot=0xFF).ljust(60, b"\0"))] == [
            b"\x00\x01\x02",
            b"\x00\x01\x03",
        ]
        assert [r[16:19] for r in target.handle(hdr(1, 5, shelf=0xFFFF, slot=2).ljust(60, b"\0"))] == [
            b"\x00\x01\x02",
            b"\x00\x07\x02",
        ]
        assert one(target, ata(0x24, 0, 1, shelf=1, slot=3))[36:] == pattern(1, 2)
        assert one(target, ata(0x24, 0, 1, shelf=1, slot=2))[36:] == pattern(1, 1)
        assert one(target, ata(0xEC, 0, 1, shelf=1, slot=3))[36 + 200 : 36 + 208] == struct.pack("<Q", 32)
        assert one(target, ata(0x34, 0, 1, b"\1" * 512, shelf=7, slot=2))[25] == 0x04
        assert (ea.frames, eb.frames, ec.frames) == (4, 4, 3)


def test_target_validation(export: OpenExport, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bufcnt"):
        Target([export], TMAC, bufcnt=1)
    with pytest.raises(ValueError, match="MTU"):
        Target([export], TMAC, mtu=547)
    with pytest.raises(ValueError, match="multicast"):
        Target([export], b"\x01" + TMAC[1:])
    with pytest.raises(ValueError, match="at least one"):
        Target([], TMAC)
    with OpenExport(ExportSpec(1, 2, make_file(tmp_path / "x.img", 4))) as dup:
        with pytest.raises(ValueError, match="duplicate AoE address e1.2"):
            Target([export, dup], TMAC)
    with pytest.raises(ValueError, match="at most 32"):
        Target([export], TMAC, mac_allow=[bytes((2, 0, 0, 0, 0, i)) for i in range(33)])


def test_handle_accepts_memoryview_and_bytearray(target: Target) -> None:
    frame = ata(0xEC, 0, 1)
    assert target.handle(memoryview(frame)) == target.handle(bytearray(frame)) == target.handle(frame)


def test_counters(target: Target) -> None:
    one(target, ata(0x34, 0, 2, b"\1" * 1024))
    one(target, ata(0x24, 0, 2))
    one(target, ata(0x24, 0, 1))
    one(target, ata(0x24, SECTORS, 1))
    one(target, ata(0xC8))
    assert target.counters() == {
        "e1.2": {"frames": 5, "bytes_read": 1536, "bytes_written": 1024, "errors": 2, "denied": 0, "broadcast": 0}
    }
    assert (
        target.exports[0].format_counters()
        == "e1.2: frames=5 bytes_read=1536 bytes_written=1024 errors=2 denied=0 broadcast=0"
    )


# -- MAC mask list -------------------------------------------------------------------------------


def mask(
    mcmd: int,
    directives: list[tuple[int, bytes]],
    *,
    src: bytes = CLIENT,
    count: int | None = None,
    tag: int = 3,
) -> bytes:
    n = len(directives) if count is None else count
    body = b"".join(bytes((0, d)) + m for d, m in directives)
    return (hdr(2, tag, src=src) + bytes((0, mcmd, 0, n)) + body).ljust(60, b"\0")


def test_mask_read_empty(target: Target) -> None:
    r = one(target, mask(0, []))
    assert r == (reply_hdr(2, 3) + b"\x00\x00\x00\x00").ljust(60, b"\0")


def test_mask_edit_and_filtering(target: Target) -> None:
    third = bytes.fromhex("525400000003")
    r = one(target, mask(1, [(1, CLIENT), (1, third), (0, OTHER)]))
    assert r[:24] == reply_hdr(2, 3)
    assert r[24:28] == b"\x00\x01\x00\x02"
    assert r[28:44] == b"\x00\x00" + CLIENT + b"\x00\x00" + third
    # Frames from MACs not on the list get no reply at all.
    assert target.handle(ata(0xEC, 0, 1, src=OTHER)) == []
    assert target.handle(hdr(1, src=OTHER, dst=b"\xff" * 6, shelf=0xFFFF, slot=0xFF).ljust(60, b"\0")) == []
    assert target.handle(mask(0, [], src=OTHER)) == []
    assert len(target.handle(ata(0xEC, 0, 1, src=third))) == 1
    # Adding a duplicate is a no-op; deleting an absent MAC too.
    r = one(target, mask(1, [(1, CLIENT), (2, OTHER)]))
    assert r[27] == 2
    # Delete everything: everybody is welcome again.
    r = one(target, mask(1, [(2, CLIENT), (2, third)]))
    assert r[24:28] == b"\x00\x01\x00\x00"
    assert len(target.handle(ata(0xEC, 0, 1, src=OTHER))) == 1


def test_mask_bad_directive(target: Target) -> None:
    r = one(target, mask(1, [(1, CLIENT), (3, OTHER), (1, OTHER)]))
    assert r == (reply_hdr(2, 3) + b"\x00\x01\x02\x01").ljust(60, b"\0")
    assert target.exports[0].masks == [CLIENT]  # directives before the failing one stay applied


def test_mask_list_full(target: Target) -> None:
    macs = [bytes((2, 0, 0, 0, 1, i)) for i in range(32)]
    r = one(target, mask(1, [(1, CLIENT)] + [(1, m) for m in macs[:31]]))
    assert r[27] == 32
    r = one(target, mask(1, [(0, b"\0" * 6), (1, macs[31])]))
    assert r == (reply_hdr(2, 3) + b"\x00\x01\x03\x01").ljust(60, b"\0")
    assert len(target.exports[0].masks) == 32
    r = one(target, mask(0, []))
    assert r[27] == 32 and len(r) == 28 + 32 * 8


def test_mask_bad_mcmd_and_truncated(target: Target) -> None:
    r = one(target, mask(2, []))
    assert r[14:16] == b"\x1c\x02"
    r = one(target, mask(1, [], count=5))  # 5 directives announced, frame holds 4
    assert r[14:16] == b"\x1c\x02"
    assert target.exports[0].masks == []
    assert target.handle(mask(0, [])[:27]) == []


def test_mac_allow_preloads_mask(export: OpenExport) -> None:
    target = Target([export], TMAC, mac_allow=[OTHER])
    assert target.handle(ata(0xEC, 0, 1)) == []
    assert len(target.handle(ata(0xEC, 0, 1, src=OTHER))) == 1
    r = one(target, mask(0, [], src=OTHER))
    assert r[27] == 1 and r[30:36] == OTHER
    assert export.denied == 1 and export.frames == 2


def test_per_export_allow_list_and_bufcnt(disk: Path, tmp_path: Path) -> None:
    """Each export answers only its own MACs and advertises its own bufcnt; Target's mac_allow overrides."""
    other_disk = make_file(tmp_path / "other.img", seed=1)
    third = bytes.fromhex("525400000003")
    with (
        OpenExport(ExportSpec(1, 2, disk), mac_allow=[CLIENT], bufcnt=64) as a,
        OpenExport(ExportSpec(1, 3, other_disk), mac_allow=[OTHER, third]) as b,
    ):
        target = Target([a, b], TMAC, bufcnt=8)
        assert a.masks == [CLIENT] and b.masks == [OTHER, third]
        assert len(target.handle(ata(0xEC, 0, 1))) == 1
        assert target.handle(ata(0xEC, 0, 1, src=OTHER)) == []
        assert target.handle(ata(0xEC, 0, 1, slot=3)) == []
        assert len(target.handle(ata(0xEC, 0, 1, src=third, slot=3))) == 1
        # A broadcast query reaches only the exports allowing the sender, each with its bufcnt.
        query = hdr(1, src=OTHER, dst=b"\xff" * 6, shelf=0xFFFF, slot=0xFF).ljust(60, b"\0")
        (r,) = target.handle(query)
        assert r[18] == 3 and struct.unpack_from(">H", r, 24)[0] == 8
        (r,) = target.handle(query.replace(OTHER, CLIENT, 1))
        assert r[18] == 2 and struct.unpack_from(">H", r, 24)[0] == 64
        assert (a.denied, b.denied) == (2, 2)
        # Announcements go unicast to each export's MACs.
        assert sorted(f[:6] for f in target.announce()) == sorted([CLIENT, OTHER, third])
        Target([a, b], TMAC, mac_allow=[third])
        assert a.masks == b.masks == [third]
    with pytest.raises(ValueError, match="bufcnt 1 out of range"):
        OpenExport(ExportSpec(1, 2, disk), bufcnt=1)


def test_long_initial_allow_list(disk: Path) -> None:
    """An inventory export shared by more than 32 machines: all are allowed; a mask read fits one frame."""
    macs = [bytes((2, 0, 0, 0, i >> 8, i & 0xFF)) for i in range(300)]
    with OpenExport(ExportSpec(1, 2, disk), mac_allow=macs) as exp:
        target = Target([exp], TMAC)
        assert len(target.handle(ata(0xEC, 0, 1, src=macs[299]))) == 1
        r = one(target, mask(0, [], src=macs[0]))
        assert r[27] == (1500 - 28) // 8 and len(r) == 28 + r[27] * 8 <= 1500


# -- Reserve/Release -----------------------------------------------------------------------------


def reserve(rcmd: int, macs: list[bytes], *, src: bytes = CLIENT, nmacs: int | None = None) -> bytes:
    n = len(macs) if nmacs is None else nmacs
    return (hdr(3, 8, src=src) + bytes((rcmd, n)) + b"".join(macs)).ljust(60, b"\0")


def test_reserve_read_empty(target: Target) -> None:
    assert one(target, reserve(0, [])) == (reply_hdr(3, 8) + b"\x00\x00").ljust(60, b"\0")


def test_reserve_set_and_enforce(target: Target, disk: Path) -> None:
    r = one(target, reserve(1, [CLIENT]))
    assert r == (reply_hdr(3, 8) + b"\x01\x01" + CLIENT).ljust(60, b"\0")
    # Another initiator: set refused with error 6 and the current list.
    r = one(target, reserve(1, [OTHER], src=OTHER))
    assert r == (reply_hdr(3, 8, dst=OTHER, error=6) + b"\x01\x01" + CLIENT).ljust(60, b"\0")
    # Its ATA commands other than IDENTIFY get AoE error 6.
    before = disk.read_bytes()
    for frame in (ata(0x24, 0, 1, src=OTHER), ata(0x34, 0, 1, b"\1" * 512, src=OTHER), ata(0xE7, src=OTHER)):
        r = one(target, frame)
        assert r[14:16] == b"\x1c\x06" and r[24:28] == frame[24:28]
    assert disk.read_bytes() == before
    assert one(target, ata(0xEC, 0, 1, src=OTHER))[27] == 0x40
    assert one(target, ata(0x24, 0, 1))[27] == 0x40  # the owner is fine
    # Reads of the list work for anybody.
    assert one(target, reserve(0, [], src=OTHER))[24:32] == b"\x00\x01" + CLIENT
    # The owner may set a new list including others.
    assert one(target, reserve(1, [CLIENT, OTHER]))[25] == 2
    assert one(target, ata(0x24, 0, 1, src=OTHER))[27] == 0x40
    # Release (set empty list) by a member.
    assert one(target, reserve(1, [], src=OTHER))[24:26] == b"\x01\x00"
    assert target.exports[0].reservations == []


def test_reserve_force_set(target: Target) -> None:
    one(target, reserve(1, [CLIENT]))
    r = one(target, reserve(2, [OTHER], src=OTHER))
    assert r == (reply_hdr(3, 8, dst=OTHER) + b"\x02\x01" + OTHER).ljust(60, b"\0")
    assert one(target, ata(0x24, 0, 1))[14:16] == b"\x1c\x06"
    assert one(target, reserve(2, []))[25] == 0


@pytest.mark.parametrize("rcmd", [3, 0x80, 0xFF])
def test_reserve_bad_rcmd(target: Target, rcmd: int) -> None:
    r = one(target, reserve(rcmd, []))
    assert r[14:16] == b"\x1c\x02" and r[24:26] == bytes((rcmd, 0))


def test_reserve_short_payload(target: Target) -> None:
    r = one(target, reserve(2, [CLIENT], nmacs=6))  # 6 MACs announced, 34 bytes of payload
    assert r[14:16] == b"\x1c\x02"
    assert target.exports[0].reservations == []
    assert target.handle(reserve(0, [])[:25]) == []


# -- export spec parsing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("1.2=/d.img", ExportSpec(1, 2, Path("/d.img"))),
        ("e0.0=d.img,ro", ExportSpec(0, 0, Path("d.img"), readonly=True)),
        ("65534.254=/x,offset=2048,length=100", ExportSpec(65534, 254, Path("/x"), offset=2048, length=100)),
        ("3.4=/x,length=0x10,ro,offset=0", ExportSpec(3, 4, Path("/x"), readonly=True, length=16)),
        ("3.4=/path with spaces/x=y.img", ExportSpec(3, 4, Path("/path with spaces/x=y.img"))),
    ],
)
def test_parse_export_spec(text: str, spec: ExportSpec) -> None:
    assert parse_export_spec(text) == spec


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("/d.img", "expected SHELF.SLOT=PATH"),
        ("1=/d.img", "'1' is not a valid SHELF.SLOT"),
        ("a.b=/d.img", "'a.b' is not a valid SHELF.SLOT"),
        ("1.2.3=/d.img", "'1.2.3' is not a valid"),
        ("65535.1=/d.img", "shelf 65535 out of range"),
        ("1.255=/d.img", "slot 255 out of range"),
        ("1.2=", "missing PATH"),
        ("1.2=,ro", "missing PATH"),
        ("1.2=/d,rw", "unknown export option 'rw'"),
        ("1.2=/d,lenght=4", "unknown export option 'lenght=4'"),
        ("1.2=/d,ro=1", "unknown export option 'ro=1'"),
        ("1.2=/d,offset=abc", "'offset=abc': offset must be an integer"),
        ("1.2=/d,offset=-1", "'offset=-1': offset must not be negative"),
        ("1.2=/d,length=0", "'length=0': length must be at least 1"),
        ("1.2=/d,ro,ro", "'ro': option 'ro' given twice"),
        ("1.2=/d,offset", "unknown export option 'offset'"),
    ],
)
def test_parse_export_spec_errors(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_export_spec(text)


def test_export_spec_validation() -> None:
    with pytest.raises(ValueError, match="shelf"):
        ExportSpec(0xFFFF, 0, Path("x"))
    with pytest.raises(ValueError, match="slot"):
        ExportSpec(0, 0xFF, Path("x"))
    with pytest.raises(ValueError, match="offset"):
        ExportSpec(0, 0, Path("x"), offset=-1)
    with pytest.raises(ValueError, match="length"):
        ExportSpec(0, 0, Path("x"), length=0)
    assert ExportSpec(12, 3, Path("x")).name == "e12.3"
