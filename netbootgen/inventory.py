"""The inventory: one TOML file, loaded and validated completely into frozen dataclasses (netbootgen.model).

Validation collects every problem (each naming its key path and value) and raises one InventoryError. What a
generator needs to render is checked here too (e.g. that every NIC driver has a Kconfig symbol), so that a
loaded inventory always renders.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from netbootgen.checker import Checker, known, part, show
from netbootgen.dhcp_table import check_dhcp, parse_dhcp, parse_machine_dhcp
from netbootgen.errors import InventoryError
from netbootgen.kconfig import FS_SYMBOLS, NIC_DRIVERS, SYMBOL_RE
from netbootgen.model import Export, Inventory, Machine, Profile, Server

__all__ = ["EXAMPLE_NAME", "Export", "Inventory", "Machine", "Profile", "Server", "example_text",
           "load_inventory", "normalize_mac", "parse_inventory"]

EXAMPLE_NAME = "<built-in example>"

# Not '.' or '..': Linux refuses them, and '..' is no path component for the vblade unit's device unit name.
IFNAME_RE = re.compile(r"^(?!\.\.?\Z)[A-Za-z0-9_.:-]{1,15}\Z")
MAC_RE = re.compile(r"^[0-9a-f]{2}([:-]?)[0-9a-f]{2}(\1[0-9a-f]{2}){4}\Z")
CISCO_MAC_RE = re.compile(r"^[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}\Z")
SERIAL_RE = re.compile(r"^tty[A-Za-z]+[0-9]+(,[0-9]{3,7}([noe][5-8]?)?)?\Z")
KVER_RE = re.compile(r"^[0-9]+\.[0-9]+(\.[0-9]+)?-[0-9A-Za-z.+~-]+\Z")
KCONFIG_VALUE_RE = re.compile(r'^(y|m|n|-?[0-9]+|0x[0-9a-fA-F]+|"[^"\n]*")\Z')
MODULE_RE = re.compile(r"^[a-z0-9_]+\Z")
FSTYPE_RE = re.compile(r"^[a-z0-9]+\Z")
PCI_ID_RE = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{4}\Z")
# Characters an export path may not hold: the vblade unit quotes it for ExecStart= and friends, which cannot
# carry these (netbootgen.export.systemd.unit_value_problem); checked here so that `validate` reports them.
UNSAFE_PATH_CHARS = frozenset('"\\')
MTU_MIN, MTU_MAX = 576, 9216
SHELF_MAX, SLOT_MAX = 0xFFFE, 0xFE  # 0xffff / 0xff are the broadcast addresses
SECTIONS = ("profiles", "servers", "exports", "machines")


def normalize_mac(value: str) -> str | None:
    """'AA-BB-CC-DD-EE-FF', 'aabb.ccdd.eeff', 'aabbccddeeff' -> 'aa:bb:cc:dd:ee:ff'; None if malformed."""
    v = value.strip().lower()
    if MAC_RE.match(v):
        hexdigits = v.replace(":", "").replace("-", "")
    elif CISCO_MAC_RE.match(v):
        hexdigits = v.replace(".", "")
    else:
        return None
    return ":".join(hexdigits[i : i + 2] for i in range(0, 12, 2))


def _kernel_arg_problem(arg: str) -> str | None:
    if not arg:
        return "empty kernel argument"
    if any(c in arg for c in "\"'\\") or not arg.isprintable():
        return f"kernel argument {show(arg)} contains a quote, backslash, newline or control character"
    if " " in arg:
        return f"kernel argument {show(arg)} contains a space (give each argument as its own list item)"
    return None


def _path_problem(path: str) -> str | None:
    if not path.startswith("/"):
        return f"{show(path)} must be an absolute path"
    if any(c in UNSAFE_PATH_CHARS for c in path) or not path.isprintable():
        return f"{show(path)} contains a double quote, backslash or control character (not allowed in a unit file)"
    return None


class _Checker(Checker):
    """A Checker that also holds what the cross-entity rules need while the tables are read in order: the
    MACs and shelf.slot targets seen so far, and the names rejected as unsafe (so that references to them are
    not reported a second time)."""

    def __init__(self) -> None:
        super().__init__()
        self.macs: dict[str, tuple[str, str]] = {}  # normalized MAC -> (key path, value as written)
        self.overlays: dict[str, str] = {}  # cow overlay path -> key path of its export
        self.targets: dict[tuple[int, int], str] = {}  # (shelf, slot) -> key path of the export
        self.rejected: dict[str, set[str]] = {s: set() for s in SECTIONS}
        self.default_profile_users: set[str] = set()
        self.kconfig_named: dict[str, set[str]] = {}  # profile -> the names in its kconfig_symbols

    def kernel_args(self, args: tuple[str, ...], key: str) -> None:
        for i, arg in enumerate(args):
            problem = _kernel_arg_problem(arg)
            if problem:
                self.bad(f"{key}[{i}]", problem)


@dataclass(frozen=True)
class _Defaults:
    profile: str | None = None
    serial_console: str | None = None
    kernel_args: tuple[str, ...] = ()


def _serial(c: _Checker, raw: dict[str, Any], key: str) -> str | None:
    serial = c.str_(raw, "serial_console", key)
    if serial == "":
        return None  # an explicit "no serial console", e.g. to override defaults.serial_console
    if serial is not None and not SERIAL_RE.match(serial):
        c.bad(f"{key}.serial_console", f"{show(serial)} is not a serial console (e.g. \"ttyS0,115200\")")
        return None
    return serial


def _defaults(c: _Checker, raw: dict[str, Any]) -> _Defaults:
    c.keys(raw, "defaults", {"profile", "serial_console", "kernel_args"})
    args = c.strlist(raw, "kernel_args", "defaults")
    c.kernel_args(args, "defaults.kernel_args")
    return _Defaults(c.str_(raw, "profile", "defaults"), _serial(c, raw, "defaults"), args)


def _profile(c: _Checker, name: str, raw: dict[str, Any]) -> Profile:
    key = f"profiles.{part(name)}"
    c.keys(raw, key, {"kernel_version", "kernel_path", "nic_drivers", "nic_pci", "aoe", "config", "kconfig_symbols"})
    kver = c.str_(raw, "kernel_version", key, "auto") or "auto"
    if kver != "auto" and not KVER_RE.match(kver):
        c.bad(f"{key}.kernel_version", f"{show(kver)} is not a kernel version (\"auto\" or e.g. \"6.1.0-56-amd64\")")
    kpath = c.str_(raw, "kernel_path", key)
    if kpath is not None and not kpath.startswith("/"):
        c.bad(f"{key}.kernel_path", f"{show(kpath)} must be an absolute path")
    if kpath is not None and "kernel_version" in raw:
        c.bad(f"{key}.kernel_path", "give kernel_version or kernel_path, not both")
    drivers = []
    nic_pci = _nic_pci(c, raw.get("nic_pci", []), f"{key}.nic_pci")
    if "nic_drivers" in raw and not isinstance(raw["nic_drivers"], dict):
        c.table(raw["nic_drivers"], f"{key}.nic_drivers")
    else:
        for drv, how in sorted(raw.get("nic_drivers", {} if nic_pci else {"virtio_net": "m"}).items()):
            if not MODULE_RE.match(drv):
                c.bad(f"{key}.nic_drivers.{part(drv)}", f"{show(drv)} is not a kernel module name")
            drivers.append((drv, c.ym(how, f"{key}.nic_drivers.{part(drv)}")))
        if not drivers and not nic_pci:
            c.bad(f"{key}.nic_drivers", "needs at least one NIC driver (or a PCI id in nic_pci)")
    aoe = c.ym(raw.get("aoe", "m"), f"{key}.aoe")
    config = []
    for sym, val in sorted(c.table(raw.get("config", {}), f"{key}.config").items()):
        skey = f"{key}.config.{part(sym)}"
        if not SYMBOL_RE.match(sym):
            c.bad(skey, f"{show(sym)} is not a Kconfig symbol (CONFIG_…)")
        if not isinstance(val, str) or not KCONFIG_VALUE_RE.match(val):
            c.bad(skey, f"{show(val)} must be \"y\", \"m\", \"n\", a number or a quoted string")
            continue
        config.append((sym, val))
    given = c.table(raw.get("kconfig_symbols", {}), f"{key}.kconfig_symbols")
    c.kconfig_named[name] = set(given)  # a malformed symbol is reported once, not its driver as unknown too
    for drv, _ in drivers:
        if MODULE_RE.match(drv) and drv not in NIC_DRIVERS and drv not in given:
            c.bad(f"{key}.nic_drivers.{part(drv)}", _no_symbol("NIC driver", drv, NIC_DRIVERS, key))
    symbols = tuple(_kconfig_symbols(c, given, key).items())
    return Profile(name, kver, kpath, tuple(drivers), aoe, tuple(config), symbols, nic_pci)


def _nic_pci(c: _Checker, raw: Any, key: str) -> tuple[str, ...]:
    """profiles.*.nic_pci: NICs named by PCI id ("8086:10d3"); their drivers come from the kernel's aliases."""
    if not isinstance(raw, list):
        c.bad(key, f"must be a list of PCI ids such as \"8086:10d3\", not {show(raw)}")
        return ()
    ids = []
    for i, v in enumerate(raw):
        if not isinstance(v, str) or not PCI_ID_RE.match(v):
            c.bad(f"{key}[{i}]", f"{show(v)} is not a PCI id (vendor:device in hex, e.g. \"8086:10d3\")")
        elif v.lower() in ids:
            c.bad(f"{key}[{i}]", f"{show(v)} is listed twice")
        else:
            ids.append(v.lower())
    return tuple(ids)


def _kconfig_symbols(c: _Checker, raw: dict[str, Any], key: str) -> dict[str, str]:
    """profiles.*.kconfig_symbols: NIC driver or file system type -> its Kconfig symbol, for those that
    netbootgen.kconfig does not know. Which names it may hold is checked once the machines are read."""
    symbols = {}
    for name, sym in sorted(raw.items()):
        if isinstance(sym, str) and SYMBOL_RE.match(sym):
            symbols[name] = sym
        else:
            c.bad(f"{key}.kconfig_symbols.{part(name)}", f"{show(sym)} is not a Kconfig symbol (CONFIG_ followed "
                                                         "by upper-case letters, digits and '_')")
    return symbols


def _no_symbol(what: str, name: str, table: dict[str, Any], profile_key: str) -> str:
    hint = known(f"{what}s it knows", name, sorted(table))
    return (f"netbootgen does not know the Kconfig symbol of {what} {name!r} {hint}; if the name is right, "
            f"give its symbol in {profile_key}.kconfig_symbols, e.g. "
            f"kconfig_symbols = {{ {name} = \"CONFIG_…\" }}")


def _server(c: _Checker, name: str, raw: dict[str, Any]) -> Server:
    key = f"servers.{part(name)}"
    c.keys(raw, key, {"interface", "interfaces", "mtu"})
    mtu = c.int_(raw, "mtu", key, 1500, MTU_MIN, MTU_MAX) or 1500
    if "interfaces" in raw:
        if "interface" in raw:
            c.bad(f"{key}.interfaces", f"give interface = {show(raw['interface'])} or interfaces = "
                                       f"{show(raw['interfaces'])}, not both")
        first, more = _interfaces(c, raw, key)
        return Server(name, first, mtu, more)
    if "interface" not in raw:
        c.bad(f"{key}.interface", "is required (or interfaces = [...], to serve on several)")
    iface = c.str_(raw, "interface", key) or "eth0"
    if "interface" in raw and not IFNAME_RE.match(iface):
        c.bad(f"{key}.interface", f"{show(iface)} is not an interface name")
    return Server(name, iface, mtu)


def _interfaces(c: _Checker, raw: dict[str, Any], key: str) -> tuple[str, tuple[str, ...]]:
    """`interfaces = ["eth0", "eth1"]`: the server's exports are served on each (multipath)."""
    names = c.strlist(raw, "interfaces", key)
    if not names and isinstance(raw["interfaces"], list):
        c.bad(f"{key}.interfaces", "is empty (name at least one interface)")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        # ':' too: Linux refuses it in a device name ('eth0:1' is an address label, no AF_PACKET interface).
        if not IFNAME_RE.match(name) or ":" in name:
            c.bad(f"{key}.interfaces[{i}]", f"{show(name)} is not an interface name")
        elif name in seen:
            c.bad(f"{key}.interfaces[{i}]", f"{show(name)} is already interfaces[{seen[name]}]")
        seen.setdefault(name, i)
    return (names[0] if names else "eth0"), tuple(names[1:])


def _export(c: _Checker, name: str, raw: dict[str, Any]) -> Export:
    key = f"exports.{part(name)}"
    allowed = {"server", "shelf", "slot", "path", "readonly", "sync", "direct", "bufcnt", "offset", "length", "cow"}
    c.keys(raw, key, allowed, {"server", "shelf", "slot", "path"})
    path = c.str_(raw, "path", key) or ""
    problem = _path_problem(path) if isinstance(raw.get("path"), str) else None
    if problem:
        c.bad(f"{key}.path", problem)
    shelf = c.int_(raw, "shelf", key, None, 0, SHELF_MAX, "0xffff is the broadcast shelf")
    slot = c.int_(raw, "slot", key, None, 0, SLOT_MAX, "0xff is the broadcast slot")
    if shelf is not None and slot is not None:
        if (shelf, slot) in c.targets:
            c.bad(key, f"shelf.slot {shelf}.{slot} (e{shelf}.{slot}) is already used by {c.targets[shelf, slot]}")
        else:
            c.targets[shelf, slot] = key
    cow = _cow(c, raw, key, path)
    return Export(
        name=name,
        server=c.str_(raw, "server", key) or "",
        shelf=shelf or 0,
        slot=slot or 0,
        path=path,
        readonly=c.bool_(raw, "readonly", key),
        sync=c.bool_(raw, "sync", key),
        direct=c.bool_(raw, "direct", key),
        bufcnt=c.int_(raw, "bufcnt", key, 64, 2, 65535) or 64,
        offset=c.int_(raw, "offset", key, 0, 0, 2**48) or 0,
        length=c.int_(raw, "length", key, None, 1, 2**48),
        cow=cow,
    )


def _cow(c: _Checker, raw: dict[str, Any], key: str, path: str) -> str | None:
    """exports.*.cow: the overlay of a copy-on-write export (netbootgen serve only; path stays unwritten)."""
    if "cow" not in raw:
        return None
    cow = c.str_(raw, "cow", key)
    if cow is None:
        return None
    problem = _path_problem(cow)
    if problem:
        c.bad(f"{key}.cow", problem)
    elif cow == path:
        c.bad(f"{key}.cow", f"{show(cow)} is the export's path: the overlay must be another file")
    elif cow in c.overlays:
        c.bad(f"{key}.cow", f"{show(cow)} is already the overlay of {c.overlays[cow]}")
    else:
        c.overlays[cow] = key
    for flag, why in (("readonly", "cow never writes path; readonly would refuse the machine's writes"),
                      ("direct", "O_DIRECT is not supported on a cow export")):
        if raw.get(flag) is True:
            c.bad(f"{key}.{flag}", f"cannot be combined with cow ({why})")
    return cow


def _macs(c: _Checker, raw: dict[str, Any], key: str) -> tuple[str, ...]:
    """The machine's MACs, normalized; each malformed, multicast or already used one is reported."""
    macs = []
    values = c.strlist(raw, "macs", key)
    if "macs" in raw and isinstance(raw["macs"], list) and not raw["macs"]:
        c.bad(f"{key}.macs", "needs at least one MAC address")
    for i, mac in enumerate(values):
        mkey = f"{key}.macs[{i}]"
        norm = normalize_mac(mac)
        if norm is None:
            c.bad(mkey, f"{show(mac)} is not a valid MAC address (e.g. \"52:54:00:12:34:56\")")
        elif int(norm[:2], 16) & 1 or norm == "00:00:00:00:00:00":
            c.bad(mkey, f"{show(mac)} is a multicast, broadcast or all-zero address, not a NIC's")
        elif norm in c.macs:
            first_key, first = c.macs[norm]
            c.bad(mkey, f"MAC {show(mac)} is already used by {first_key} ({first!r}; both are {norm})")
        else:
            c.macs[norm] = (mkey, mac)
            macs.append(norm)
    return tuple(macs)


def _machine(c: _Checker, name: str, raw: dict[str, Any], defaults: _Defaults) -> Machine:
    key = f"machines.{part(name)}"
    allowed = {"macs", "export", "profile", "serial_console", "kernel_args", "mtu", "aoe_interfaces", "fstype",
               "ip", "hostname"}
    c.keys(raw, key, allowed, {"macs", "export"})
    macs = _macs(c, raw, key)
    ip, hostname = parse_machine_dhcp(c, raw, key)
    serial = _serial(c, raw, key) if "serial_console" in raw else defaults.serial_console
    if "kernel_args" in raw:
        args = c.strlist(raw, "kernel_args", key)
        c.kernel_args(args, f"{key}.kernel_args")
    else:
        args = defaults.kernel_args
    ifaces = []
    for i, iface in enumerate(c.strlist(raw, "aoe_interfaces", key)):
        # The initrd compares these with sysfs names and lower-case colon-separated addresses.
        mac = normalize_mac(iface)
        if mac is not None:
            ifaces.append(mac)
        elif IFNAME_RE.match(iface):
            ifaces.append(iface)
        else:
            c.bad(f"{key}.aoe_interfaces[{i}]", f"{show(iface)} is neither an interface name nor a MAC address")
    fstype = c.str_(raw, "fstype", key, "ext4") or "ext4"
    if not FSTYPE_RE.match(fstype):
        c.bad(f"{key}.fstype", f"{show(fstype)} is not a file system type")
    if "profile" in raw:
        profile = c.str_(raw, "profile", key) or ""
    else:
        profile = defaults.profile or ""
        c.default_profile_users.add(name)
    return Machine(
        name=name,
        macs=macs,
        export=c.str_(raw, "export", key) or "",
        profile=profile,
        serial_console=serial,
        kernel_args=args,
        mtu=c.int_(raw, "mtu", key, None, MTU_MIN, MTU_MAX),
        aoe_interfaces=tuple(ifaces),
        fstype=fstype,
        ip=ip,
        hostname=hostname,
    )


def _cross_checks(c: _Checker, inv: Inventory, defaults: _Defaults) -> None:
    """References between entities, and writable exports used by more than one machine (O(entities))."""
    default_profile_bad = False
    if defaults.profile and defaults.profile not in inv.profiles:
        default_profile_bad = True
        if defaults.profile not in c.rejected["profiles"]:
            c.bad("defaults.profile", f"no profile named {defaults.profile!r} "
                                      f"{known('profiles', defaults.profile, inv.profiles)}")
    first_user: dict[str, str] = {}
    for m in inv.machines.values():
        key = f"machines.{part(m.name)}"
        from_defaults = m.name in c.default_profile_users
        if not m.profile:
            c.bad(f"{key}.profile", "is required (or set defaults.profile)")
        elif m.profile not in inv.profiles and not (from_defaults and default_profile_bad) \
                and m.profile not in c.rejected["profiles"]:
            c.bad(f"{key}.profile", f"no profile named {m.profile!r} {known('profiles', m.profile, inv.profiles)}")
        if not m.export:
            continue
        ex = inv.exports.get(m.export)
        if ex is None:
            if m.export not in c.rejected["exports"]:
                c.bad(f"{key}.export", f"no export named {m.export!r} {known('exports', m.export, inv.exports)}")
        elif m.export in first_user and not ex.readonly:
            c.bad(f"{key}.export", f"{m.export!r} is a writable export already used by {first_user[m.export]} "
                                   f"(set exports.{part(m.export)}.readonly = true, or give each machine "
                                   "its own export)")
        else:
            first_user.setdefault(m.export, f"machines.{part(m.name)}")
    for ex in inv.exports.values():
        if ex.server and ex.server not in inv.servers and ex.server not in c.rejected["servers"]:
            c.bad(f"exports.{part(ex.name)}.server",
                  f"no server named {ex.server!r} {known('servers', ex.server, inv.servers)}")


def _kconfig_checks(c: _Checker, inv: Inventory) -> None:
    """Every root file system type has a Kconfig symbol (netbootgen's or the profile's kconfig_symbols;
    reported at the first machine of each profile using it), and every kconfig_symbols entry names a NIC
    driver of its profile or the fstype of one of its machines, and does not contradict netbootgen's table."""
    fstypes: dict[str, set[str]] = {name: set() for name in inv.profiles}
    for m in inv.machines.values():
        if m.profile not in inv.profiles or m.fstype in fstypes[m.profile]:
            continue
        fstypes[m.profile].add(m.fstype)
        pkey = f"profiles.{part(m.profile)}"
        if FSTYPE_RE.match(m.fstype) and m.fstype not in FS_SYMBOLS \
                and m.fstype not in c.kconfig_named[m.profile]:
            c.bad(f"machines.{part(m.name)}.fstype", _no_symbol("file system", m.fstype, FS_SYMBOLS, pkey))
    for p in inv.profiles.values():
        pkey = f"profiles.{part(p.name)}"
        drivers = [drv for drv, _ in p.nic_drivers]
        symbols = dict(p.kconfig_symbols)
        for name in sorted(c.kconfig_named[p.name]):
            skey, sym = f"{pkey}.kconfig_symbols.{part(name)}", symbols.get(name)
            if name not in drivers and name not in fstypes[p.name]:
                c.bad(skey, f"{show(name)} is neither a NIC driver of {pkey} ({', '.join(drivers) or 'none'}) nor "
                            f"the fstype of one of its machines ({', '.join(sorted(fstypes[p.name])) or 'none'})")
            elif sym is None:
                continue  # a malformed symbol, already reported
            elif name in drivers and name in NIC_DRIVERS and sym != NIC_DRIVERS[name].symbol:
                c.bad(skey, f"{show(sym)}: netbootgen knows the symbol of NIC driver {name!r} "
                            f"({NIC_DRIVERS[name].symbol}); remove this entry (other options go in {pkey}.config)")
            elif name in fstypes[p.name] and name in FS_SYMBOLS and sym not in FS_SYMBOLS[name]:
                c.bad(skey, f"{show(sym)}: netbootgen knows the symbols of file system {name!r} "
                            f"({', '.join(FS_SYMBOLS[name])}); remove this entry (other options go in "
                            f"{pkey}.config)")


def parse_inventory(data: dict[str, Any], source: str) -> Inventory:
    c = _Checker()
    c.keys(data, None, {"defaults", "dhcp", *SECTIONS})
    defaults = _defaults(c, c.table(data.get("defaults"), "defaults"))
    sections: dict[str, dict[str, dict[str, Any]]] = {}
    for section in SECTIONS:
        sections[section] = {}
        for name, raw in c.table(data.get(section), section).items():
            key = f"{section}.{part(name)}"
            if c.name(name, key) and (isinstance(raw, dict) or c.table(raw, key)):
                sections[section][name] = raw
            else:
                c.rejected[section].add(name)  # reported once; references to it are not reported again
    if not sections["machines"] and not c.rejected["machines"]:
        c.bad("machines", "the inventory describes no machine")
    inv = Inventory(
        source=source,
        profiles={n: _profile(c, n, r) for n, r in sorted(sections["profiles"].items())},
        servers={n: _server(c, n, r) for n, r in sorted(sections["servers"].items())},
        exports={n: _export(c, n, r) for n, r in sorted(sections["exports"].items())},
        machines={n: _machine(c, n, r, defaults) for n, r in sorted(sections["machines"].items())},
        dhcp=parse_dhcp(c, data.get("dhcp")),
    )
    check_dhcp(c, inv.dhcp, inv.machines)
    _cross_checks(c, inv, defaults)
    _kconfig_checks(c, inv)
    if c.problems:
        raise InventoryError(source, c.problems)
    return inv


def example_text() -> str:
    return resources.files("netbootgen").joinpath("data/example.toml").read_text(encoding="utf-8")


def load_inventory(path: Path | None) -> Inventory:
    """Load and validate `path`, or the built-in example when `path` is None."""
    if path is None:
        text, source = example_text(), EXAMPLE_NAME
    else:
        source = str(path)
        try:
            text = path.read_bytes().decode("utf-8")
        except OSError as e:
            raise InventoryError(source, [f"cannot read: {e.strerror}"]) from e
        except UnicodeDecodeError as e:
            raise InventoryError(source, [f"not UTF-8 text (byte {e.start} is {e.object[e.start]:#04x})"]) from e
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InventoryError(source, [f"not valid TOML: {e}"]) from e
    return parse_inventory(data, source)
