"""ATA over Ethernet (AoE r11) wire format: constants, frame builders and parsers.

Everything here is pure and allocation-happy; the target's hot path (`target.py`) uses the
precompiled structs below directly instead of the dataclass parsers.

Layout (all AoE fields big-endian, the ATA LBA little-endian)::

    0  dst MAC (6) | 6 src MAC (6) | 12 ethertype 0x88A2 (2)
    14 ver/flags | 15 error | 16 major/shelf (2) | 18 minor/slot | 19 command | 20 tag (4)
    ATA (cmd 0):     24 aflags | 25 err/feature | 26 scnt | 27 cmd/status | 28 lba0-5 | 34 res | 36 data
    Config (cmd 1):  24 bufcnt (2) | 26 fwver (2) | 28 scnt | 29 ver<<4|ccmd | 30 len (2) | 32 string
    Mask (cmd 2):    24 res | 25 mcmd | 26 merror | 27 count | 28 directives {res, dcmd, mac(6)}
    Reserve (cmd 3): 24 rcmd | 25 nmacs | 26 macs (6 each)
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

ETH_P_AOE = 0x88A2
AOE_VERSION = 1

FLAG_RESPONSE = 0x08
FLAG_ERROR = 0x04
VERFLAGS_REQUEST = AOE_VERSION << 4  # 0x10, what Linux sends
VERFLAGS_REPLY = VERFLAGS_REQUEST | FLAG_RESPONSE  # 0x18
VERFLAGS_ERROR_REPLY = VERFLAGS_REPLY | FLAG_ERROR  # 0x1C

BROADCAST_MAC = b"\xff" * 6
BROADCAST_SHELF = 0xFFFF
BROADCAST_SLOT = 0xFF
MAX_SHELF = 0xFFFE
MAX_SLOT = 0xFE

SECTOR_SIZE = 512
ETH_HEADER_LEN = 14
AOE_HEADER_LEN = 24
ATA_HEADER_LEN = 36
CONFIG_HEADER_LEN = 32
MASK_HEADER_LEN = 28
MASK_DIRECTIVE_LEN = 8
RESERVE_HEADER_LEN = 26
MIN_FRAME_LEN = 60  # Ethernet minimum without FCS
MAX_CONFIG_LEN = 1024
MAX_MASKS = 32
MAX_SCNT = 255
MIN_MTU = ATA_HEADER_LEN + SECTOR_SIZE  # smallest MTU that carries one sector (and IDENTIFY)

FIRMWARE_VERSION = 0x0100
DEFAULT_BUFCNT = 64  # Linux keeps min(bufcnt, aoe_maxout = 64) frames in flight; see docs/benchmarks.md
DEFAULT_MODEL = "netbootgen AoE target"
DEFAULT_FIRMWARE = "NBG 0.1"


class AoeCommand(IntEnum):
    ATA = 0
    CONFIG = 1
    MASK = 2
    RESERVE = 3


class AoeError(IntEnum):
    BAD_COMMAND = 1
    BAD_ARGUMENT = 2
    DEVICE_UNAVAILABLE = 3
    CONFIG_STRING_PRESENT = 4
    UNSUPPORTED_VERSION = 5
    TARGET_RESERVED = 6


class ConfigCommand(IntEnum):
    READ = 0
    TEST = 1
    PREFIX_TEST = 2
    SET = 3
    FORCE_SET = 4


class MaskCommand(IntEnum):
    READ = 0
    EDIT = 1


class MaskDirective(IntEnum):
    NOP = 0
    ADD = 1
    DELETE = 2


class MaskError(IntEnum):
    UNSPECIFIED = 1
    BAD_DIRECTIVE = 2
    LIST_FULL = 3


class ReserveCommand(IntEnum):
    READ = 0
    SET = 1
    FORCE_SET = 2


# ATA argument flags (byte 24).
AFLAG_EXT = 0x40
AFLAG_DEVICE = 0x10
AFLAG_ASYNC = 0x02
AFLAG_WRITE = 0x01


class AtaCommand(IntEnum):
    READ_SECTORS = 0x20
    READ_SECTORS_EXT = 0x24
    WRITE_SECTORS = 0x30
    WRITE_SECTORS_EXT = 0x34
    CHECK_POWER_MODE = 0xE5
    FLUSH_CACHE = 0xE7
    FLUSH_CACHE_EXT = 0xEA
    IDENTIFY_DEVICE = 0xEC


# ATA status register bits.
ATA_STATUS_BSY = 0x80
ATA_STATUS_DRDY = 0x40
ATA_STATUS_DF = 0x20
ATA_STATUS_DRQ = 0x08
ATA_STATUS_ERR = 0x01
ATA_STATUS_OK = ATA_STATUS_DRDY  # 0x40
ATA_STATUS_FAILED = ATA_STATUS_DRDY | ATA_STATUS_ERR  # 0x41
ATA_STATUS_FAIL_MASK = 0xA9  # what the Linux initiator treats as failure

# ATA error register bits.
ATA_ERR_UNC = 0x40
ATA_ERR_IDNF = 0x10
ATA_ERR_ABRT = 0x04

LBA28_MASK = 0x0FFFFFFF
LBA48_MASK = 0xFFFFFFFFFFFF

# Precompiled structs.  HEADER covers bytes 0..23.
HEADER = struct.Struct(">6s6sHBBHBBI")
ATA_ARGS = struct.Struct("<BBBBIH")  # aflags, err/feature, scnt, cmd/status, lba low 32, lba high 16
ATA_RESERVED = struct.Struct("<2s")
CONFIG_ARGS = struct.Struct(">HHBBH")
MASK_ARGS = struct.Struct(">BBBB")
RESERVE_ARGS = struct.Struct(">BB")


def pad_frame(frame: bytes) -> bytes:
    """Pad a frame with zeros to the 60-byte Ethernet minimum."""
    if len(frame) < MIN_FRAME_LEN:
        return frame + bytes(MIN_FRAME_LEN - len(frame))
    return frame


def parse_mac(text: str) -> bytes:
    """Parse 'aa:bb:cc:dd:ee:ff' (also '-' separated or 12 bare hex digits) into 6 bytes."""
    s = text.strip()
    if re.fullmatch(r"[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}", s):
        return bytes(int(part, 16) for part in re.split(r"[:-]", s))
    if re.fullmatch(r"[0-9A-Fa-f]{12}", s):
        return bytes.fromhex(s)
    raise ValueError(f"{text!r} is not a valid MAC address")


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def aoe_name(shelf: int, slot: int) -> str:
    return f"e{shelf}.{slot}"


@dataclass(frozen=True)
class AoeHeader:
    dst: bytes
    src: bytes
    ethertype: int
    version: int
    flags: int
    error: int
    shelf: int
    slot: int
    command: int
    tag: int

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_RESPONSE)

    @property
    def is_error(self) -> bool:
        return bool(self.flags & FLAG_ERROR)


@dataclass(frozen=True)
class AtaArgs:
    aflags: int
    err_feature: int
    scnt: int
    cmd_status: int
    lba: int
    data: bytes


@dataclass(frozen=True)
class ConfigArgs:
    bufcnt: int
    firmware: int
    scnt: int
    version: int
    ccmd: int
    config: bytes


@dataclass(frozen=True)
class MaskArgs:
    mcmd: int
    merror: int
    count: int
    directives: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True)
class ReserveArgs:
    rcmd: int
    nmacs: int
    macs: tuple[bytes, ...]


def _need(frame: bytes, length: int, what: str) -> None:
    if len(frame) < length:
        raise ValueError(f"{what} frame too short: {len(frame)} < {length} bytes")


def build_header(
    dst: bytes,
    src: bytes,
    shelf: int,
    slot: int,
    command: int,
    tag: int,
    *,
    flags: int = 0,
    error: int = 0,
    version: int = AOE_VERSION,
) -> bytes:
    """The 24-byte Ethernet + AoE header."""
    return HEADER.pack(dst, src, ETH_P_AOE, (version << 4) | flags, error, shelf, slot, command, tag)


def parse_header(frame: bytes) -> AoeHeader:
    _need(frame, AOE_HEADER_LEN, "AoE")
    dst, src, etype, verfl, error, shelf, slot, command, tag = HEADER.unpack_from(frame)
    return AoeHeader(dst, src, etype, verfl >> 4, verfl & 0x0F, error, shelf, slot, command, tag)


def build_ata_frame(
    dst: bytes,
    src: bytes,
    shelf: int,
    slot: int,
    tag: int,
    *,
    cmd: int,
    lba: int = 0,
    scnt: int = 0,
    aflags: int = 0,
    feature: int = 0,
    data: bytes = b"",
    flags: int = 0,
    error: int = 0,
    pad: bool = True,
) -> bytes:
    """An ATA request (or, with flags=FLAG_RESPONSE, a reply: `cmd` is then the status)."""
    frame = (
        build_header(dst, src, shelf, slot, AoeCommand.ATA, tag, flags=flags, error=error)
        + ATA_ARGS.pack(aflags, feature, scnt, cmd, lba & 0xFFFFFFFF, (lba >> 32) & 0xFFFF)
        + b"\0\0"
        + data
    )
    return pad_frame(frame) if pad else frame


def parse_ata(frame: bytes) -> AtaArgs:
    _need(frame, ATA_HEADER_LEN, "ATA")
    aflags, err, scnt, cmd, lo, hi = ATA_ARGS.unpack_from(frame, AOE_HEADER_LEN)
    return AtaArgs(aflags, err, scnt, cmd, lo | (hi << 32), bytes(frame[ATA_HEADER_LEN:]))


def build_config_frame(
    dst: bytes,
    src: bytes,
    shelf: int,
    slot: int,
    tag: int,
    *,
    ccmd: int = ConfigCommand.READ,
    config: bytes = b"",
    bufcnt: int = 0,
    firmware: int = 0,
    scnt: int = 0,
    flags: int = 0,
    error: int = 0,
    length: int | None = None,
) -> bytes:
    """A Query Config request or reply; `length` overrides the string length field."""
    clen = len(config) if length is None else length
    return pad_frame(
        build_header(dst, src, shelf, slot, AoeCommand.CONFIG, tag, flags=flags, error=error)
        + CONFIG_ARGS.pack(bufcnt, firmware, scnt, (AOE_VERSION << 4) | (ccmd & 0x0F), clen)
        + config
    )


def parse_config(frame: bytes) -> ConfigArgs:
    """Parse a config frame; the string is cut to the length field (and to the frame)."""
    _need(frame, CONFIG_HEADER_LEN, "Query Config")
    bufcnt, firmware, scnt, vercmd, clen = CONFIG_ARGS.unpack_from(frame, AOE_HEADER_LEN)
    config = bytes(frame[CONFIG_HEADER_LEN : CONFIG_HEADER_LEN + clen])
    return ConfigArgs(bufcnt, firmware, scnt, vercmd >> 4, vercmd & 0x0F, config)


def build_mask_frame(
    dst: bytes,
    src: bytes,
    shelf: int,
    slot: int,
    tag: int,
    *,
    mcmd: int = MaskCommand.READ,
    directives: Sequence[tuple[int, bytes]] = (),
    merror: int = 0,
    count: int | None = None,
    flags: int = 0,
    error: int = 0,
) -> bytes:
    body = b"".join(bytes((0, dcmd)) + mac for dcmd, mac in directives)
    n = len(directives) if count is None else count
    return pad_frame(
        build_header(dst, src, shelf, slot, AoeCommand.MASK, tag, flags=flags, error=error)
        + MASK_ARGS.pack(0, mcmd, merror, n)
        + body
    )


def parse_mask(frame: bytes) -> MaskArgs:
    """Parse a mask frame; directives are read up to the count field (as far as the frame goes)."""
    _need(frame, MASK_HEADER_LEN, "MAC mask")
    _res, mcmd, merror, count = MASK_ARGS.unpack_from(frame, AOE_HEADER_LEN)
    dirs = []
    for i in range(count):
        off = MASK_HEADER_LEN + i * MASK_DIRECTIVE_LEN
        if off + MASK_DIRECTIVE_LEN > len(frame):
            break
        dirs.append((frame[off + 1], bytes(frame[off + 2 : off + 8])))
    return MaskArgs(mcmd, merror, count, tuple(dirs))


def build_reserve_frame(
    dst: bytes,
    src: bytes,
    shelf: int,
    slot: int,
    tag: int,
    *,
    rcmd: int = ReserveCommand.READ,
    macs: Sequence[bytes] = (),
    nmacs: int | None = None,
    flags: int = 0,
    error: int = 0,
) -> bytes:
    n = len(macs) if nmacs is None else nmacs
    return pad_frame(
        build_header(dst, src, shelf, slot, AoeCommand.RESERVE, tag, flags=flags, error=error)
        + RESERVE_ARGS.pack(rcmd, n)
        + b"".join(macs)
    )


def parse_reserve(frame: bytes) -> ReserveArgs:
    _need(frame, RESERVE_HEADER_LEN, "Reserve/Release")
    rcmd, nmacs = RESERVE_ARGS.unpack_from(frame, AOE_HEADER_LEN)
    macs = []
    for i in range(nmacs):
        off = RESERVE_HEADER_LEN + 6 * i
        if off + 6 > len(frame):
            break
        macs.append(bytes(frame[off : off + 6]))
    return ReserveArgs(rcmd, nmacs, tuple(macs))


def max_sectors_for_mtu(mtu: int) -> int:
    """Sectors per ATA frame advertised in config replies: (mtu - 36) // 512, capped at 255."""
    return max(0, min(MAX_SCNT, (mtu - ATA_HEADER_LEN) // SECTOR_SIZE))


# -- IDENTIFY DEVICE -----------------------------------------------------------------------------


def ata_string(text: str, length: int) -> bytes:
    """An ATA IDENTIFY string field: space padded, characters swapped within each 16-bit word."""
    raw = text.encode("ascii", "replace")[:length].ljust(length, b" ")
    out = bytearray(length)
    out[0::2] = raw[1::2]
    out[1::2] = raw[0::2]
    return bytes(out)


def parse_ata_string(field: bytes) -> str:
    """Inverse of `ata_string`, with trailing spaces removed."""
    out = bytearray(len(field))
    out[0::2] = field[1::2]
    out[1::2] = field[0::2]
    return out.decode("ascii", "replace").rstrip(" ")


def make_serial(shelf: int, slot: int, hostname: str) -> str:
    """vblade-style serial number 'shelf.slot:hostname', cut to the 20-character field."""
    return f"{shelf}.{slot}:{hostname}"[:20]


def build_identify(
    sectors: int,
    *,
    serial: str,
    model: str = DEFAULT_MODEL,
    firmware: str = DEFAULT_FIRMWARE,
) -> bytes:
    """The 512-byte IDENTIFY DEVICE page, laid out like vblade's (words little-endian)."""
    words = [0] * 256
    words[47] = 0x8000
    words[49] = 0x0200  # LBA supported
    words[50] = 0x4000
    words[83] = 0x5400  # LBA48 supported
    words[84] = 0x4000
    words[86] = 0x1400  # LBA48 enabled
    words[87] = 0x4000
    words[93] = 0x400B
    lba28 = min(sectors, LBA28_MASK)
    words[60] = lba28 & 0xFFFF
    words[61] = lba28 >> 16
    for i in range(4):
        words[100 + i] = (sectors >> (16 * i)) & 0xFFFF
    page = bytearray(struct.pack("<256H", *words))
    page[20:40] = ata_string(serial, 20)  # words 10-19
    page[46:54] = ata_string(firmware, 8)  # words 23-26
    page[54:94] = ata_string(model, 40)  # words 27-46
    return bytes(page)


def identify_capacity(page: bytes) -> int:
    """Capacity as the Linux initiator reads it: LBA48 words 100-103 if enabled, else words 60-61."""
    w83, w86 = struct.unpack_from("<H", page, 166)[0], struct.unpack_from("<H", page, 172)[0]
    if (w83 | w86) & (1 << 10):
        return int(struct.unpack_from("<Q", page, 200)[0])
    return int(struct.unpack_from("<I", page, 120)[0])
