"""Kernel config fragments, one per profile, for the kernel's scripts/kconfig/merge_config.sh.

Every symbol appears once, as `CONFIG_X=v` or `# CONFIG_X is not set` (the two forms merge_config.sh reads);
the other comments never name a symbol, so merge_config.sh's greps only see the option lines.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from netbootgen.errors import InventoryError
from netbootgen.inventory import Inventory, Profile
from netbootgen.render import FileTree, RenderedFile, inventory_header, render_template


@dataclass(frozen=True)
class NicDriver:
    """A NIC driver's Kconfig symbol, the bool options it sits under (=y) and the tristate drivers it needs
    alongside it (built the same way: =y or =m like the NIC driver)."""

    symbol: str
    under: tuple[str, ...] = ()
    with_: tuple[str, ...] = ()


def _eth(vendor: str, symbol: str) -> NicDriver:
    return NicDriver(symbol, ("CONFIG_PCI", "CONFIG_ETHERNET", f"CONFIG_NET_VENDOR_{vendor}"))


# NIC driver (module name, as in profiles.*.nic_drivers) -> its Kconfig symbol and dependencies. Checked
# against Debian's kernel config and modules by tests/test_kernel_fragment.py.
NIC_DRIVERS: dict[str, NicDriver] = {
    "virtio_net": NicDriver("CONFIG_VIRTIO_NET", ("CONFIG_PCI", "CONFIG_VIRTIO_MENU"),
                            ("CONFIG_VIRTIO_PCI",)),
    "e1000": _eth("INTEL", "CONFIG_E1000"),
    "e1000e": _eth("INTEL", "CONFIG_E1000E"),
    "igb": _eth("INTEL", "CONFIG_IGB"),
    "igc": _eth("INTEL", "CONFIG_IGC"),
    "ixgbe": _eth("INTEL", "CONFIG_IXGBE"),
    "i40e": _eth("INTEL", "CONFIG_I40E"),
    "ice": _eth("INTEL", "CONFIG_ICE"),
    "r8169": _eth("REALTEK", "CONFIG_R8169"),
    "8139cp": _eth("REALTEK", "CONFIG_8139CP"),
    "8139too": _eth("REALTEK", "CONFIG_8139TOO"),
    "tg3": _eth("BROADCOM", "CONFIG_TIGON3"),
    "bnx2": _eth("BROADCOM", "CONFIG_BNX2"),
    "bnxt_en": _eth("BROADCOM", "CONFIG_BNXT"),
    "mlx4_en": NicDriver("CONFIG_MLX4_EN", ("CONFIG_PCI", "CONFIG_ETHERNET", "CONFIG_NET_VENDOR_MELLANOX",
                                            "CONFIG_INET"), ("CONFIG_MLX4_CORE",)),
    "mlx5_core": NicDriver("CONFIG_MLX5_CORE", ("CONFIG_PCI", "CONFIG_ETHERNET",
                                                "CONFIG_NET_VENDOR_MELLANOX", "CONFIG_INET",
                                                "CONFIG_MLX5_CORE_EN")),
    "vmxnet3": NicDriver("CONFIG_VMXNET3", ("CONFIG_PCI", "CONFIG_INET")),
    "ne2k_pci": _eth("8390", "CONFIG_NE2K_PCI"),
    "pcnet32": _eth("AMD", "CONFIG_PCNET32"),
    "sky2": _eth("MARVELL", "CONFIG_SKY2"),
    "atl1c": _eth("ATHEROS", "CONFIG_ATL1C"),
}

# Root file system type (machines.*.fstype) -> what the kernel needs to mount it.
FS_SYMBOLS: dict[str, tuple[str, ...]] = {
    "ext2": ("CONFIG_EXT4_FS", "CONFIG_EXT4_USE_FOR_EXT2"),
    "ext3": ("CONFIG_EXT4_FS",),
    "ext4": ("CONFIG_EXT4_FS",),
    "xfs": ("CONFIG_XFS_FS",),
    "btrfs": ("CONFIG_BTRFS_FS",),
    "f2fs": ("CONFIG_F2FS_FS",),
}


@dataclass(frozen=True)
class Group:
    why: str
    options: tuple[tuple[str, str], ...]


def _unknown(what: str, key: str, value: str, known: Collection[str], profile: str) -> str:
    return (f"{key}: netbootgen does not know the kernel config symbol of {what} {value!r} (it knows "
            f"{', '.join(sorted(known))}); set the symbol in profiles.{profile}.config, e.g. "
            f"CONFIG_{value.upper()} = \"m\"")


def _tristate_extras(p: Profile) -> bool:
    return any(v in ("y", "m") for _, v in p.config)


def fragment_groups(p: Profile, fstypes: Mapping[str, str] | None = None) -> tuple[list[Group], list[str]]:
    """The fragment of profile `p` as commented groups, and the problems found. `fstypes` maps the root
    file system types of the profile's machines to the key that sets each (default: ext4).

    A NIC driver or file system that netbootgen has no symbol for is a problem, unless the profile's own
    `config` sets some option to "y" or "m" (taken to be the missing symbol). Options that the profile's
    `config` sets are left out of the other groups: its value wins."""
    problems: list[str] = []
    own = {sym for sym, _ in p.config}
    nic: dict[str, str] = {"CONFIG_NETDEVICES": "y"}
    for drv, how in p.nic_drivers:
        d = NIC_DRIVERS.get(drv)
        if d is None:
            if not _tristate_extras(p):
                key = f"profiles.{p.name}.nic_drivers.{drv}"
                problems.append(_unknown("NIC driver", key, drv, NIC_DRIVERS, p.name))
            continue
        nic.update((sym, "y") for sym in d.under)
        for sym in (d.symbol, *d.with_):
            if nic.get(sym) != "y":  # two drivers needing one bus driver: built in wins
                nic[sym] = how
    fs: dict[str, str] = {}
    for fstype, key in sorted((fstypes or {"ext4": f"profiles.{p.name}"}).items()):
        if fstype in FS_SYMBOLS:
            fs.update((sym, "y") for sym in FS_SYMBOLS[fstype])
        elif not _tristate_extras(p):
            problems.append(_unknown("file system", key, fstype, FS_SYMBOLS, p.name))

    def group(why: str, options: dict[str, str]) -> Group:
        return Group(why, tuple((s, v) for s, v in options.items() if s not in own))

    groups = [
        group("ATA over Ethernet: the root disk is an AoE target (/dev/etherd/eS.L), a block driver on the "
              "network", {"CONFIG_NET": "y", "CONFIG_BLK_DEV": "y", "CONFIG_ATA_OVER_ETH": p.aoe}),
        group("NIC drivers of this profile, and the buses and menus they sit under (AoE needs the link "
              "only, no IP)", dict(sorted(nic.items()))),
        group("Booting from an initrd (gzip: dracut's default); devtmpfs for /dev; unix sockets for systemd "
              "and udev", {"CONFIG_BLK_DEV_INITRD": "y", "CONFIG_RD_GZIP": "y", "CONFIG_DEVTMPFS": "y",
                           "CONFIG_UNIX": "y"}),
        group("Packet sockets: for DHCP clients in the initrd, and for vblade on a server",
              {"CONFIG_PACKET": "y"}),
        group("The root file system, built in: the root mounts even from an initrd without its module",
              dict(sorted(fs.items()))),
        group("Serial console, built in so that it works from the first kernel message (console=ttyS...)",
              {"CONFIG_SERIAL_8250": "y", "CONFIG_SERIAL_8250_CONSOLE": "y"}),
    ]
    if p.config:
        groups.append(Group(f"Set by profiles.{p.name}.config in the inventory (these take precedence)",
                            p.config))
    return [g for g in groups if g.options], problems


def profile_fstypes(inv: Inventory) -> dict[str, dict[str, str]]:
    """Profile name -> the root file system types of its machines, each with the key of its first machine."""
    found: dict[str, dict[str, str]] = {}
    for m in inv.machines.values():
        found.setdefault(m.profile, {}).setdefault(m.fstype, f"machines.{m.name}.fstype")
    return found


def render_fragments(inv: Inventory) -> FileTree:
    hdr = inventory_header(inv)
    fstypes = profile_fstypes(inv)
    files: FileTree = {}
    problems: list[str] = []
    for p in inv.profiles.values():
        groups, found = fragment_groups(p, fstypes.get(p.name))
        problems += found
        ctx = {"header": hdr, "profile": p.name, "groups": groups}
        files[f"kernel/{p.name}.config"] = RenderedFile(render_template("kernel/fragment.config.j2", ctx))
    if problems:
        raise InventoryError(inv.source, problems)
    return files
