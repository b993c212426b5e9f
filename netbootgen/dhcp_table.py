"""The inventory's DHCP settings: the optional [dhcp] table and the machine keys `ip` and `hostname`, read and
checked (each problem naming its key path and value) for netbootgen.inventory's loader."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from netbootgen.checker import Checker, part, show
from netbootgen.model import Dhcp, Machine

MODES = ("server", "proxy")
UNKNOWN = ("ignore", "local-boot")
# One DNS label: dnsmasq sends it as the client's host name (option 12).
HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
IFNAME_RE = re.compile(r"^(?!\.\.?\Z)[A-Za-z0-9_.:-]{1,15}\Z")
DHCP_KEYS = {"mode", "interface", "subnet", "range", "router", "tftp_root", "unknown"}


def _ipv4(c: Checker, value: Any, key: str) -> ipaddress.IPv4Address | None:
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError
        return ipaddress.IPv4Address(value)
    except ValueError:
        c.bad(key, f"{show(value)} is not an IPv4 address (e.g. \"192.0.2.10\")")
        return None


def _choice(c: Checker, raw: dict[str, Any], k: str, choices: tuple[str, ...]) -> str:
    v = c.str_(raw, k, "dhcp", choices[0]) or choices[0]
    if v not in choices:
        c.bad(f"dhcp.{k}", f"{show(v)} is not one of {', '.join(repr(x) for x in choices)}")
        return choices[0]
    return v


def parse_dhcp(c: Checker, raw: Any) -> Dhcp | None:
    """The [dhcp] table, or None when the inventory has none."""
    if raw is None:
        return None
    raw = c.table(raw, "dhcp")
    c.keys(raw, "dhcp", DHCP_KEYS, {"subnet"})
    mode = _choice(c, raw, "mode", MODES)
    iface = c.str_(raw, "interface", "dhcp")
    if iface is not None and not IFNAME_RE.match(iface):
        c.bad("dhcp.interface", f"{show(iface)} is not an interface name")
    subnet = None
    text = c.str_(raw, "subnet", "dhcp")
    if text is not None:
        try:
            subnet = ipaddress.IPv4Network(text)
        except ValueError:
            c.bad("dhcp.subnet", f"{show(text)} is not an IPv4 network with its prefix (e.g. \"192.0.2.0/24\", "
                                 "host bits zero)")
    rng = None
    if "range" in raw:
        value = raw["range"]
        if mode == "proxy":
            c.bad("dhcp.range", "a proxy-DHCP server hands out no addresses: remove range (or set mode = \"server\")")
        elif not (isinstance(value, list) and len(value) == 2):
            c.bad("dhcp.range", f"must be a list of the first and last address, not {show(value)}")
        else:
            first, last = (_ipv4(c, v, f"dhcp.range[{i}]") for i, v in enumerate(value))
            if first and last:
                if first > last:
                    c.bad("dhcp.range", f"{show(value)}: the first address is above the last")
                elif subnet and not (first in subnet and last in subnet):
                    c.bad("dhcp.range", f"{show(value)} is not inside dhcp.subnet {subnet}")
                else:
                    rng = (str(first), str(last))
    router = _ipv4(c, raw.get("router"), "dhcp.router")
    if router and mode == "proxy":
        c.bad("dhcp.router", "a proxy-DHCP server sends no router (the other DHCP server does)")
    elif router and subnet and router not in subnet:
        c.bad("dhcp.router", f"{show(str(router))} is not inside dhcp.subnet {subnet}")
    tftp_root = c.str_(raw, "tftp_root", "dhcp", "/srv/tftp") or "/srv/tftp"
    if not tftp_root.startswith("/") or "," in tftp_root or not tftp_root.isprintable():
        c.bad("dhcp.tftp_root", f"{show(tftp_root)} must be an absolute path without ','")
    return Dhcp(mode=mode, interface=iface, subnet=str(subnet) if subnet else None, range=rng,
                router=str(router) if router else None, tftp_root=tftp_root,
                unknown=_choice(c, raw, "unknown", UNKNOWN))


def parse_machine_dhcp(c: Checker, raw: dict[str, Any], key: str) -> tuple[str | None, str | None]:
    """A machine's `ip` and `hostname` (checked against [dhcp] later, by check_dhcp)."""
    ip = _ipv4(c, raw.get("ip"), f"{key}.ip")
    hostname = c.str_(raw, "hostname", key)
    if hostname is not None and not HOSTNAME_RE.match(hostname):
        c.bad(f"{key}.hostname", f"{show(hostname)} is not a host name (letters, digits and '-', at most 63, "
                                 "no '-' at either end)")
        hostname = None
    return (str(ip) if ip else None), hostname


def check_dhcp(c: Checker, dhcp: Dhcp | None, machines: dict[str, Machine]) -> None:
    """Fixed addresses: only with a [dhcp] server, inside its subnet, not its network or broadcast address,
    each used once; host names each used once."""
    subnet = ipaddress.IPv4Network(dhcp.subnet) if dhcp and dhcp.subnet else None
    ips: dict[str, str] = {}
    names: dict[str, str] = {}
    for m in machines.values():
        key = f"machines.{part(m.name)}"
        if m.hostname is not None:
            if dhcp is None:
                c.bad(f"{key}.hostname", "is given to the machine by the DHCP server: add a [dhcp] table")
            elif m.hostname.lower() in names:
                c.bad(f"{key}.hostname", f"{m.hostname!r} is already used by {names[m.hostname.lower()]}")
            else:
                names[m.hostname.lower()] = f"{key}.hostname"
        if m.ip is None:
            continue
        ip = ipaddress.IPv4Address(m.ip)
        if dhcp is None:
            c.bad(f"{key}.ip", "a fixed address is given by the DHCP server: add a [dhcp] table")
        elif dhcp.mode == "proxy":
            c.bad(f"{key}.ip", f"{m.ip!r}: a proxy-DHCP server ([dhcp] mode = \"proxy\") gives no addresses")
        elif subnet and (ip not in subnet or ip in (subnet.network_address, subnet.broadcast_address)):
            c.bad(f"{key}.ip", f"{m.ip!r} is not a host address of dhcp.subnet {subnet}")
        elif m.ip in ips:
            c.bad(f"{key}.ip", f"{m.ip!r} is already used by {ips[m.ip]}")
        else:
            ips[m.ip] = f"{key}.ip"
