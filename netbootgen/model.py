"""What a validated inventory is: frozen dataclasses, as netbootgen.inventory's loader builds them.

Each of Inventory's tables is a dict in name order; MACs are normalized ('aa:bb:cc:dd:ee:ff')."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from netbootgen.checker import known
from netbootgen.errors import InputError


@dataclass(frozen=True)
class Profile:
    name: str
    kernel_version: str = "auto"
    kernel_path: str | None = None
    nic_drivers: tuple[tuple[str, str], ...] = (("virtio_net", "m"),)
    aoe: str = "m"
    config: tuple[tuple[str, str], ...] = ()
    # NIC driver or root file system type -> its Kconfig symbol, for those netbootgen.kconfig does not know
    kconfig_symbols: tuple[tuple[str, str], ...] = ()
    # NICs named by PCI id ("8086:10d3"): their drivers come from the kernel's module aliases
    nic_pci: tuple[str, ...] = ()


@dataclass(frozen=True)
class Server:
    name: str
    interface: str  # the first (or only) of `interfaces`
    mtu: int = 1500
    # Every interface the exports are served on (multipath: `interfaces = [...]`); () means (interface,).
    more_interfaces: tuple[str, ...] = ()

    @property
    def interfaces(self) -> tuple[str, ...]:
        return (self.interface, *self.more_interfaces)


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
    bufcnt: int = 64  # Linux keeps min(bufcnt, 64) frames in flight; both vblade and netbootgen gain
    offset: int = 0
    length: int | None = None
    cow: str | None = None  # copy-on-write overlay (netbootgen serve; vblade units leave such exports out)

    @property
    def target(self) -> str:
        return f"e{self.shelf}.{self.slot}"


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
    ip: str | None = None  # a fixed IPv4 address from the DHCP server ([dhcp] mode = "server")
    hostname: str | None = None  # the host name the DHCP server gives it


@dataclass(frozen=True)
class Dhcp:
    """The [dhcp] table: how the rendered dnsmasq configuration answers netboot clients."""

    mode: str = "server"  # "server": addresses and boot files; "proxy": boot files only (proxy-DHCP)
    interface: str | None = None  # None: every interface
    subnet: str | None = None  # "192.0.2.0/24"; required
    range: tuple[str, str] | None = None  # dynamic addresses (server mode); None: fixed addresses only
    router: str | None = None
    tftp_root: str = "/srv/tftp"
    unknown: str = "ignore"  # MACs without a dhcp-host: "ignore" (no boot file) or "local-boot"


@dataclass(frozen=True)
class Inventory:
    source: str
    profiles: dict[str, Profile] = field(default_factory=dict)
    servers: dict[str, Server] = field(default_factory=dict)
    exports: dict[str, Export] = field(default_factory=dict)
    machines: dict[str, Machine] = field(default_factory=dict)
    dhcp: Dhcp | None = None  # no [dhcp] table: no dnsmasq configuration is rendered

    def machine(self, name: str | None) -> Machine:
        """The machine named `name`; the first by name when `name` is None."""
        if name is None:
            return next(iter(self.machines.values()))
        try:
            return self.machines[name]
        except KeyError:
            raise InputError(f"no machine named {name!r} {known('machines', name, self.machines)}") from None

    @cached_property
    def export_users(self) -> dict[str, tuple[Machine, ...]]:
        """Export name -> the machines booting from it, in name order (that of `machines`; one pass over
        them, so that per-export lookups stay O(1) in large fleets). Unused exports map to ()."""
        users: dict[str, list[Machine]] = {name: [] for name in self.exports}
        for m in self.machines.values():
            users.setdefault(m.export, []).append(m)
        return {name: tuple(ms) for name, ms in users.items()}
