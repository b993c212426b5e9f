"""Wire-format helpers of netbootgen.aoe.protocol, checked against hand-written bytes."""

from __future__ import annotations

import struct

import pytest

from netbootgen.aoe import protocol as p

CLIENT = bytes.fromhex("525400123456")
TARGET = bytes.fromhex("020000000102")


def test_constants_match_reference() -> None:
    assert p.ETH_P_AOE == 0x88A2
    assert (p.FLAG_RESPONSE, p.FLAG_ERROR) == (0x08, 0x04)
    assert (p.VERFLAGS_REQUEST, p.VERFLAGS_REPLY, p.VERFLAGS_ERROR_REPLY) == (0x10, 0x18, 0x1C)
    assert [int(e) for e in p.AoeError] == [1, 2, 3, 4, 5, 6]
    assert [int(c) for c in p.ConfigCommand] == [0, 1, 2, 3, 4]
    assert (p.ATA_STATUS_OK, p.ATA_STATUS_FAILED, p.ATA_ERR_IDNF, p.ATA_ERR_ABRT) == (0x40, 0x41, 0x10, 0x04)
    assert (p.AFLAG_EXT, p.AFLAG_WRITE) == (0x40, 0x01)


def test_build_header_bytes() -> None:
    hdr = p.build_header(p.BROADCAST_MAC, CLIENT, 0xFFFF, 0xFF, 1, 0x01020304)
    assert hdr == (
        b"\xff" * 6
        + CLIENT
        + b"\x88\xa2"
        + b"\x10\x00"
        + b"\xff\xff"
        + b"\xff"
        + b"\x01"
        + b"\x01\x02\x03\x04"
    )
    h = p.parse_header(hdr)
    assert (h.dst, h.src, h.ethertype, h.version, h.flags, h.error) == (
        p.BROADCAST_MAC,
        CLIENT,
        0x88A2,
        1,
        0,
        0,
    )
    assert (h.shelf, h.slot, h.command, h.tag) == (0xFFFF, 0xFF, 1, 0x01020304)
    assert not h.is_response and not h.is_error


def test_header_flags_and_error() -> None:
    hdr = p.build_header(CLIENT, TARGET, 1, 2, 0, 7, flags=p.FLAG_RESPONSE | p.FLAG_ERROR, error=6)
    assert hdr[14:16] == b"\x1c\x06"
    h = p.parse_header(hdr)
    assert h.is_response and h.is_error and h.error == 6


def test_parse_header_too_short() -> None:
    with pytest.raises(ValueError, match="too short"):
        p.parse_header(bytes(23))


@pytest.mark.parametrize("length", [0, 1, 24, 59])
def test_pad_frame_short(length: int) -> None:
    out = p.pad_frame(b"\x01" * length)
    assert len(out) == 60 and out[:length] == b"\x01" * length and out[length:] == bytes(60 - length)


@pytest.mark.parametrize("length", [60, 61, 1060])
def test_pad_frame_long_unchanged(length: int) -> None:
    frame = b"\x02" * length
    assert p.pad_frame(frame) is frame


def test_ata_frame_lba_is_little_endian() -> None:
    frame = p.build_ata_frame(
        TARGET,
        CLIENT,
        1,
        2,
        9,
        cmd=0x34,
        lba=0x0000_1234_5678_9ABC,
        scnt=2,
        aflags=0x41,
        data=b"\xaa" * 1024,
    )
    assert len(frame) == 36 + 1024
    assert frame[19] == 0
    assert frame[24:28] == b"\x41\x00\x02\x34"
    assert frame[28:34] == bytes.fromhex("bc9a78563412")
    assert frame[34:36] == b"\0\0"
    a = p.parse_ata(frame)
    assert (a.aflags, a.err_feature, a.scnt, a.cmd_status, a.lba) == (0x41, 0, 2, 0x34, 0x123456789ABC)
    assert a.data == b"\xaa" * 1024


def test_ata_frame_padded() -> None:
    frame = p.build_ata_frame(TARGET, CLIENT, 1, 2, 9, cmd=0xEC, scnt=1)
    assert len(frame) == 60
    assert len(p.build_ata_frame(TARGET, CLIENT, 1, 2, 9, cmd=0xEC, scnt=1, pad=False)) == 36


def test_config_frame_bytes() -> None:
    frame = p.build_config_frame(
        CLIENT,
        TARGET,
        1,
        2,
        0xABCD,
        ccmd=3,
        config=b"hello",
        bufcnt=16,
        firmware=0x4019,
        scnt=17,
        flags=p.FLAG_RESPONSE,
    )
    assert frame[14] == 0x18 and frame[19] == 1
    assert frame[24:32] == b"\x00\x10" + b"\x40\x19" + b"\x11" + b"\x13" + b"\x00\x05"
    assert frame[32:37] == b"hello" and len(frame) == 60
    c = p.parse_config(frame)
    assert (c.bufcnt, c.firmware, c.scnt, c.version, c.ccmd, c.config) == (16, 0x4019, 17, 1, 3, b"hello")


def test_config_length_override() -> None:
    frame = p.build_config_frame(CLIENT, TARGET, 1, 2, 1, ccmd=1, config=b"ab", length=1000)
    assert frame[30:32] == struct.pack(">H", 1000)
    assert p.parse_config(frame).config == b"ab" + bytes(60 - 34)  # cut to the frame


def test_mask_frame_bytes() -> None:
    m1, m2 = bytes.fromhex("0a0b0c0d0e0f"), bytes.fromhex("111213141516")
    frame = p.build_mask_frame(TARGET, CLIENT, 1, 2, 5, mcmd=1, directives=[(1, m1), (2, m2)])
    assert frame[19] == 2
    assert frame[24:28] == b"\x00\x01\x00\x02"
    assert frame[28:36] == b"\x00\x01" + m1
    assert frame[36:44] == b"\x00\x02" + m2
    m = p.parse_mask(frame)
    assert (m.mcmd, m.merror, m.count, m.directives) == (1, 0, 2, ((1, m1), (2, m2)))


def test_mask_parse_stops_at_frame_end() -> None:
    frame = p.build_mask_frame(TARGET, CLIENT, 1, 2, 5, mcmd=1, directives=[], count=200)
    assert p.parse_mask(frame).count == 200
    assert len(p.parse_mask(frame).directives) == 4  # (60 - 28) // 8 zero directives


def test_reserve_frame_bytes() -> None:
    frame = p.build_reserve_frame(TARGET, CLIENT, 1, 2, 5, rcmd=2, macs=[CLIENT, TARGET])
    assert frame[19] == 3
    assert frame[24:26] == b"\x02\x02"
    assert frame[26:38] == CLIENT + TARGET
    r = p.parse_reserve(frame)
    assert (r.rcmd, r.nmacs, r.macs) == (2, 2, (CLIENT, TARGET))


@pytest.mark.parametrize(
    ("text", "mac"),
    [
        ("02:00:00:00:01:02", TARGET),
        ("52-54-00-12-34-56", CLIENT),
        ("525400123456", CLIENT),
        (" AA:bb:CC:dd:EE:ff ", bytes.fromhex("aabbccddeeff")),
    ],
)
def test_parse_mac(text: str, mac: bytes) -> None:
    assert p.parse_mac(text) == mac


@pytest.mark.parametrize(
    "text", ["", "02:00:00:00:01", "02:00:00:00:01:02:03", "zz:00:00:00:01:02", "0200000001"]
)
def test_parse_mac_invalid(text: str) -> None:
    with pytest.raises(ValueError, match="not a valid MAC"):
        p.parse_mac(text)


def test_format_mac() -> None:
    assert p.format_mac(TARGET) == "02:00:00:00:01:02"


@pytest.mark.parametrize(
    ("mtu", "scnt"), [(548, 1), (1500, 2), (1060, 2), (9000, 17), (65535, 127), (1 << 20, 255), (500, 0)]
)
def test_max_sectors_for_mtu(mtu: int, scnt: int) -> None:
    assert p.max_sectors_for_mtu(mtu) == scnt


def test_ata_string_swaps_bytes_like_vblade() -> None:
    # vblade setfld: p[1] gets the first character, p[0] the second; space padded.
    assert p.ata_string("Coraid", 8) == b"oCardi  "
    assert p.ata_string("abc", 4) == b"ba c"
    assert p.ata_string("abcdef", 4) == b"badc"
    assert p.parse_ata_string(p.ata_string("V25", 8)) == "V25"


def test_make_serial() -> None:
    assert p.make_serial(1, 2, "host") == "1.2:host"
    assert p.make_serial(65534, 254, "a-very-long-hostname.example") == "65534.254:a-very-lon"
    assert len(p.make_serial(65534, 254, "a-very-long-hostname.example")) == 20


def _word(page: bytes, n: int) -> int:
    return int(struct.unpack_from("<H", page, 2 * n)[0])


def test_identify_words() -> None:
    page = p.build_identify(131072, serial="1.2:host", model="netbootgen AoE target", firmware="NBG 0.1")
    assert len(page) == 512
    expected = {
        47: 0x8000,
        49: 0x0200,
        50: 0x4000,
        83: 0x5400,
        84: 0x4000,
        86: 0x1400,
        87: 0x4000,
        93: 0x400B,
    }
    for word, value in expected.items():
        assert _word(page, word) == value, word
    assert page[120:124] == struct.pack("<I", 131072)
    assert page[200:208] == struct.pack("<Q", 131072)
    assert page[20:40] == b".1:2ohts" + b" " * 12
    assert p.parse_ata_string(page[20:40]) == "1.2:host"
    assert page[20:22] == b".1"  # "1." swapped
    assert p.parse_ata_string(page[46:54]) == "NBG 0.1"
    assert p.parse_ata_string(page[54:94]) == "netbootgen AoE target"
    assert page[93] == ord(" ")  # space padded to 40 characters
    others = (
        set(range(256))
        - set(expected)
        - {60, 61, 100, 101, 102, 103}
        - set(range(10, 20))
        - set(range(23, 47))
    )
    assert all(_word(page, w) == 0 for w in others)
    assert p.identify_capacity(page) == 131072


def test_identify_lba28_capped_lba48_full() -> None:
    sectors = 0x1_2345_6789
    page = p.build_identify(sectors, serial="x")
    assert page[120:124] == struct.pack("<I", 0x0FFFFFFF)
    assert page[200:208] == struct.pack("<Q", sectors)
    assert p.identify_capacity(page) == sectors


def test_identify_capacity_lba28_when_no_lba48() -> None:
    page = bytearray(p.build_identify(1000, serial="x"))
    page[166:168] = page[172:174] = b"\0\0"
    page[200:208] = bytes(8)
    assert p.identify_capacity(bytes(page)) == 1000
