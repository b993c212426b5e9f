"""The inventory: one TOML file, loaded and validated completely into frozen dataclasses.

Validation collects every problem (each naming its key path and value) and raises one InventoryError.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from netbootgen.errors import InventoryError

EXAMPLE_NAME = "<built-in example>"

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")
MAC_RE = re.compile(r"^[0-9a-f]{2}([:-]?)[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")
CISCO_MAC_RE = re.compile(r"^[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}$")
SERIAL_RE = re.compile(r"^tty[A-Za-z]+[0-9]+(,[0-9]{3,7}([noe][5-8]?)?)?$")
KVER_RE = re.compile(r"^[0-9]+\.[0-9]+(\.[0-9]+)?-[0-9A-Za-z.+~-]+$")
KCONFIG_RE = re.compile(r"^CONFIG_[A-Z0-9_]+$")
MTU_MIN, MTU_MAX = 576, 9216
SHELF_MAX, SLOT_MAX = 0xFFFE, 0xFE  # 0xffff / 0xff are the broadcast addresses


@dataclass(frozen=True)
class Profile:
    name: str
    kernel_version: str = "auto"
    kernel_path: str | None = None
    nic_drivers: tuple[tuple[str, str], ...] = (("virtio_net", "m"),)
    aoe: str = "m"
    config: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Server:
    name: str
    interface: str
    mtu: int = 1500


@dataclass(frozen=True)
class Export:
    name: str
    server: str
    shelf: int
    slot: int
    path: str
    readonly: bool = False
    sync: bool = False
    direct: bool = False
    bufcnt: int = 16
    offset: int = 0
    length: int | None = None

    @property
    def target(self) -> str:
        return f"e{self.shelf}.{self.slot}"

    @property
    def device(self) -> str:
        return f"/dev/etherd/{self.target}"


@dataclass(frozen=True)
class Machine:
    name: str
    macs: tuple[str, ...]
    export: str
    profile: str
    serial_console: str | None = None
    kernel_args: tuple[str, ...] = ()
    mtu: int | None = None
    aoe_interfaces: tuple[str, ...] = ()
    fstype: str = "ext4"


@dataclass(frozen=True)
class Inventory:
    source: str
    profiles: dict[str, Profile] = field(default_factory=dict)
    servers: dict[str, Server] = field(default_factory=dict)
    exports: dict[str, Export] = field(default_factory=dict)
    machines: dict[str, Machine] = field(default_factory=dict)

    def machine(self, name: str | None) -> Machine:
        if name is None:
            return next(iter(self.machines.values()))
        return self.machines[name]


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


class _Checker:
    """Reads raw TOML tables into dataclass fields, recording problems instead of raising."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, key: str, message: str) -> None:
        self.problems.append(f"{key}: {message}")

    def table(self, raw: Any, key: str) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.bad(key, f"must be a table, not {raw!r}")
            return {}
        return raw

    def keys(self, raw: dict[str, Any], key: str, allowed: set[str], required: set[str] = frozenset()) -> None:
        for k in sorted(raw):
            if k not in allowed:
                self.bad(f"{key}.{k}", f"unknown key {k!r} (known: {', '.join(sorted(allowed))})")
        for k in sorted(required - raw.keys()):
            self.bad(f"{key}.{k}", "is required")

    def name(self, name: str, key: str) -> bool:
        if not NAME_RE.match(name) or ".." in name:
            self.bad(key, f"name {name!r} is not safe as a file or unit name (letters, digits, '_', '.', '-'; "
                          "no '/', '..', spaces or shell characters; at most 64)")
            return False
        return True

    def str_(self, raw: dict[str, Any], k: str, key: str, default: str | None = None) -> str | None:
        v = raw.get(k, default)
        if v is not None and not isinstance(v, str):
            self.bad(f"{key}.{k}", f"must be a string, not {v!r}")
            return default
        return v

    def int_(self, raw: dict[str, Any], k: str, key: str, default: int | None, lo: int, hi: int) -> int | None:
        v = raw.get(k, default)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            self.bad(f"{key}.{k}", f"must be an integer, not {v!r}")
            return default
        if not lo <= v <= hi:
            self.bad(f"{key}.{k}", f"{v!r} is out of range ({lo}–{hi})")
            return default
        return v

    def bool_(self, raw: dict[str, Any], k: str, key: str) -> bool:
        v = raw.get(k, False)
        if not isinstance(v, bool):
            self.bad(f"{key}.{k}", f"must be true or false, not {v!r}")
            return False
        return v

    def strlist(self, raw: dict[str, Any], k: str, key: str) -> tuple[str, ...]:
        v = raw.get(k, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            self.bad(f"{key}.{k}", f"must be a list of strings, not {v!r}")
            return ()
        return tuple(v)

    def ym(self, value: Any, key: str) -> str:
        if value not in ("y", "m"):
            self.bad(key, f"must be \"y\" or \"m\", not {value!r}")
            return "m"
        return str(value)


def _kernel_arg_problem(arg: str) -> str | None:
    if not arg:
        return "empty kernel argument"
    if any(c in arg for c in "\"'\\") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in arg):
        return f"kernel argument {arg!r} contains a quote, backslash, newline or control character"
    if " " in arg or "\t" in arg:
        return f"kernel argument {arg!r} contains a space (give each argument as its own list item)"
    return None


def _profile(c: _Checker, name: str, raw: dict[str, Any]) -> Profile:
    key = f"profiles.{name}"
    c.keys(raw, key, {"kernel_version", "kernel_path", "nic_drivers", "aoe", "config"})
    kver = c.str_(raw, "kernel_version", key, "auto") or "auto"
    if kver != "auto" and not KVER_RE.match(kver):
        c.bad(f"{key}.kernel_version", f"{kver!r} is not a kernel version (\"auto\" or e.g. \"6.1.0-56-amd64\")")
    kpath = c.str_(raw, "kernel_path", key)
    if kpath is not None and not kpath.startswith("/"):
        c.bad(f"{key}.kernel_path", f"{kpath!r} must be an absolute path")
    if kpath is not None and "kernel_version" in raw:
        c.bad(f"{key}.kernel_path", "give kernel_version or kernel_path, not both")
    drivers_raw = c.table(raw.get("nic_drivers", {"virtio_net": "m"}), f"{key}.nic_drivers")
    drivers = []
    for drv, how in sorted(drivers_raw.items()):
        if not re.match(r"^[a-z0-9_]+$", drv):
            c.bad(f"{key}.nic_drivers.{drv}", f"{drv!r} is not a kernel module name")
        drivers.append((drv, c.ym(how, f"{key}.nic_drivers.{drv}")))
    if not drivers:
        c.bad(f"{key}.nic_drivers", "needs at least one NIC driver")
    aoe = c.ym(raw.get("aoe", "m"), f"{key}.aoe")
    config_raw = c.table(raw.get("config", {}), f"{key}.config")
    config = []
    for sym, val in sorted(config_raw.items()):
        if not KCONFIG_RE.match(sym):
            c.bad(f"{key}.config.{sym}", f"{sym!r} is not a Kconfig symbol (CONFIG_…)")
        if not isinstance(val, str) or not re.match(r'^(y|m|n|-?[0-9]+|0x[0-9a-fA-F]+|"[^"\n]*")$', val):
            c.bad(f"{key}.config.{sym}", f"{val!r} must be \"y\", \"m\", \"n\", a number or a quoted string")
            continue
        config.append((sym, val))
    return Profile(name, kver, kpath, tuple(drivers), aoe, tuple(config))


def _server(c: _Checker, name: str, raw: dict[str, Any]) -> Server:
    key = f"servers.{name}"
    c.keys(raw, key, {"interface", "mtu"}, {"interface"})
    iface = c.str_(raw, "interface", key) or "eth0"
    if "interface" in raw and not IFNAME_RE.match(iface):
        c.bad(f"{key}.interface", f"{iface!r} is not an interface name")
    mtu = c.int_(raw, "mtu", key, 1500, MTU_MIN, MTU_MAX) or 1500
    return Server(name, iface, mtu)


def _export(c: _Checker, name: str, raw: dict[str, Any]) -> Export:
    key = f"exports.{name}"
    allowed = {"server", "shelf", "slot", "path", "readonly", "sync", "direct", "bufcnt", "offset", "length"}
    c.keys(raw, key, allowed, {"server", "shelf", "slot", "path"})
    path = c.str_(raw, "path", key) or ""
    if "path" in raw and not path.startswith("/"):
        c.bad(f"{key}.path", f"{path!r} must be an absolute path")
    ex = Export(
        name=name,
        server=c.str_(raw, "server", key) or "",
        shelf=c.int_(raw, "shelf", key, 0, 0, SHELF_MAX) or 0,
        slot=c.int_(raw, "slot", key, 0, 0, SLOT_MAX) or 0,
        path=path,
        readonly=c.bool_(raw, "readonly", key),
        sync=c.bool_(raw, "sync", key),
        direct=c.bool_(raw, "direct", key),
        bufcnt=c.int_(raw, "bufcnt", key, 16, 2, 65535) or 16,
        offset=c.int_(raw, "offset", key, 0, 0, 2**48) or 0,
        length=c.int_(raw, "length", key, None, 1, 2**48),
    )
    return ex


def _machine(c: _Checker, name: str, raw: dict[str, Any], defaults: dict[str, Any]) -> Machine:
    key = f"machines.{name}"
    allowed = {"macs", "export", "profile", "serial_console", "kernel_args", "mtu", "aoe_interfaces", "fstype"}
    c.keys(raw, key, allowed, {"macs", "export"})
    macs = []
    for i, mac in enumerate(c.strlist(raw, "macs", key)):
        norm = normalize_mac(mac)
        if norm is None:
            c.bad(f"{key}.macs[{i}]", f"{mac!r} is not a valid MAC address")
        else:
            macs.append(norm)
    if "macs" in raw and not raw["macs"]:
        c.bad(f"{key}.macs", "needs at least one MAC address")
    serial = c.str_(raw, "serial_console", key, defaults.get("serial_console"))
    if serial is not None and not SERIAL_RE.match(serial):
        c.bad(f"{key}.serial_console", f"{serial!r} is not a serial console (e.g. \"ttyS0,115200\")")
    args = c.strlist(raw, "kernel_args", key) if "kernel_args" in raw else tuple(defaults.get("kernel_args", ()))
    for i, arg in enumerate(args):
        problem = _kernel_arg_problem(arg)
        if problem:
            c.bad(f"{key}.kernel_args[{i}]", problem)
    ifaces = c.strlist(raw, "aoe_interfaces", key)
    for i, iface in enumerate(ifaces):
        if not IFNAME_RE.match(iface) and normalize_mac(iface) is None:
            c.bad(f"{key}.aoe_interfaces[{i}]", f"{iface!r} is neither an interface name nor a MAC address")
    fstype = c.str_(raw, "fstype", key, "ext4") or "ext4"
    if not re.match(r"^[a-z0-9]+$", fstype):
        c.bad(f"{key}.fstype", f"{fstype!r} is not a file system type")
    return Machine(
        name=name,
        macs=tuple(macs),
        export=c.str_(raw, "export", key) or "",
        profile=c.str_(raw, "profile", key, defaults.get("profile")) or "",
        serial_console=serial,
        kernel_args=args,
        mtu=c.int_(raw, "mtu", key, None, MTU_MIN, MTU_MAX),
        aoe_interfaces=ifaces,
        fstype=fstype,
    )


def _cross_checks(c: _Checker, inv: Inventory) -> None:
    seen_macs: dict[str, str] = {}
    for m in inv.machines.values():
        key = f"machines.{m.name}"
        for i, mac in enumerate(m.macs):
            if mac in seen_macs:
                c.bad(f"{key}.macs[{i}]", f"MAC {mac} is already used by {seen_macs[mac]}")
            else:
                seen_macs[mac] = f"machines.{m.name}"
        if not m.profile:
            c.bad(f"{key}.profile", "is required (or set defaults.profile)")
        elif m.profile not in inv.profiles:
            c.bad(f"{key}.profile", f"no profile named {m.profile!r} (profiles: {', '.join(inv.profiles) or 'none'})")
        if m.export and m.export not in inv.exports:
            c.bad(f"{key}.export", f"no export named {m.export!r} (exports: {', '.join(inv.exports) or 'none'})")
    seen_targets: dict[tuple[int, int], str] = {}
    for ex in inv.exports.values():
        key = f"exports.{ex.name}"
        if ex.server and ex.server not in inv.servers:
            c.bad(f"{key}.server", f"no server named {ex.server!r} (servers: {', '.join(inv.servers) or 'none'})")
        t = (ex.shelf, ex.slot)
        if t in seen_targets:
            c.bad(f"{key}", f"shelf.slot {ex.shelf}.{ex.slot} is already used by {seen_targets[t]}")
        else:
            seen_targets[t] = f"exports.{ex.name}"
        users = [m.name for m in inv.machines.values() if m.export == ex.name]
        if not ex.readonly and len(users) > 1:
            c.bad(f"{key}", f"writable export is shared by machines {', '.join(users)} (set readonly = true or "
                            "give each machine its own export)")


def parse_inventory(data: dict[str, Any], source: str) -> Inventory:
    c = _Checker()
    c.keys(data, "(top level)", {"defaults", "profiles", "servers", "exports", "machines"})
    defaults = c.table(data.get("defaults"), "defaults")
    c.keys(defaults, "defaults", {"profile", "serial_console", "kernel_args"})
    sections: dict[str, dict[str, Any]] = {}
    for section in ("profiles", "servers", "exports", "machines"):
        sections[section] = {}
        for name, raw in c.table(data.get(section), section).items():
            if c.name(name, f"{section}.{name}"):
                sections[section][name] = c.table(raw, f"{section}.{name}")
    if not sections["machines"]:
        c.bad("machines", "the inventory describes no machine")
    inv = Inventory(
        source=source,
        profiles={n: _profile(c, n, r) for n, r in sorted(sections["profiles"].items())},
        servers={n: _server(c, n, r) for n, r in sorted(sections["servers"].items())},
        exports={n: _export(c, n, r) for n, r in sorted(sections["exports"].items())},
        machines={n: _machine(c, n, r, defaults) for n, r in sorted(sections["machines"].items())},
    )
    _cross_checks(c, inv)
    if c.problems:
        raise InventoryError(source, c.problems)
    return inv


def example_text() -> str:
    return resources.files("netbootgen").joinpath("data/example.toml").read_text()


def load_inventory(path: Path | None) -> Inventory:
    """Load and validate `path`, or the built-in example when `path` is None."""
    if path is None:
        text, source = example_text(), EXAMPLE_NAME
    else:
        source = str(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise InventoryError(source, [f"cannot read: {e.strerror}"]) from e
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InventoryError(source, [f"not valid TOML: {e}"]) from e
    return parse_inventory(data, source)
