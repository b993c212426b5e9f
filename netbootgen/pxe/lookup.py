"""Which file of pxelinux.cfg/ a PXELINUX client loads: the lookup order from the syslinux documentation.

PXELINUX tries, in pxelinux.cfg/ and stopping at the first file the TFTP server has:
  1. the client UUID, lower-case with dashes (b8945908-d6a6-41a9-611d-74a6ab80b83d), if the firmware has one;
  2. the ARP hardware type and MAC, lower-case hex with dashes (01-88-99-aa-bb-cc-dd);
  3. the IPv4 address in upper-case hex (C000025B), then shortened by one digit at a time (C000025 ... C);
  4. `default`.
(DHCP options 209/210 can override the file and prefix; netbootgen's TFTP tree does not use them.)

GRUB, for UEFI clients, tries in grub/ (netbootgen.pxe.grub): grub.cfg-01-MAC, grub.cfg-IP in hex shortened
the same way, then grub.cfg (grub_candidates).
"""

from __future__ import annotations

import ipaddress
import uuid as uuidlib
from collections.abc import Collection, Sequence

from netbootgen.inventory import normalize_mac
from netbootgen.pxe.grub import GRUB_CFG, grub_filename
from netbootgen.pxe.menu import DEFAULT_FILE, pxe_filename


def ip_hex(ip: str) -> str:
    """'192.0.2.91' -> 'C000025B'; ValueError if `ip` is not an IPv4 address."""
    return f"{int(ipaddress.IPv4Address(ip)):08X}"


def config_candidates(mac: str, ip: str | None = None, uuid: str | None = None) -> list[str]:
    """The file names (within pxelinux.cfg/) PXELINUX tries for a client, in order. `mac` may be in any form
    normalize_mac() reads; a malformed MAC, IPv4 address or UUID is a ValueError."""
    norm = normalize_mac(mac)
    if norm is None:
        raise ValueError(f"{mac!r} is not a MAC address")
    names = []
    if uuid is not None:
        names.append(str(uuidlib.UUID(uuid)))
    names.append(pxe_filename(norm))
    if ip is not None:
        h = ip_hex(ip)
        names.extend(h[:n] for n in range(len(h), 0, -1))
    names.append(DEFAULT_FILE)
    return names


def grub_candidates(mac: str, ip: str | None = None) -> list[str]:
    """The file names (within grub/) GRUB 2.06 tries for a UEFI client, in order: grub.cfg-01-MAC, grub.cfg-
    and the IPv4 address in hex shortened digit by digit, grub.cfg. ValueError as for config_candidates."""
    norm = normalize_mac(mac)
    if norm is None:
        raise ValueError(f"{mac!r} is not a MAC address")
    names = [grub_filename(norm)]
    if ip is not None:
        h = ip_hex(ip)
        names.extend(f"{GRUB_CFG}-{h[:n]}" for n in range(len(h), 0, -1))
    names.append(GRUB_CFG)
    return names


def find_config(candidates: Sequence[str], available: Collection[str]) -> str | None:
    """The first of `candidates` that is in `available`, as PXELINUX picks it; None if there is none."""
    return next((name for name in candidates if name in available), None)
