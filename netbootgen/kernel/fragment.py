"""Kernel config fragments, one per profile, for the kernel's scripts/kconfig/merge_config.sh.

Every symbol appears once, as `CONFIG_X=v` or `# CONFIG_X is not set` (the two forms merge_config.sh reads);
the other comments never name a symbol, so merge_config.sh's greps only see the option lines.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from netbootgen.errors import NetbootgenError
from netbootgen.inventory import Inventory, Profile
from netbootgen.kconfig import FS_SYMBOLS, NIC_DRIVERS, NicDriver
from netbootgen.render import FileTree, RenderedFile, inventory_header, render_template


@dataclass(frozen=True)
class Group:
    why: str
    options: tuple[tuple[str, str], ...]


def fragment_groups(p: Profile, fstypes: Collection[str] = ("ext4",)) -> list[Group]:
    """The fragment of profile `p` as commented groups; `fstypes` are the root file system types of the
    profile's machines. Options that the profile's `config` sets are left out of the other groups: its value
    wins.

    A NIC driver or file system that netbootgen.kconfig does not know takes its symbol from the profile's
    `kconfig_symbols` (the inventory loader made sure there is one) and gets nothing else: what it depends
    on is for the profile's `config`."""
    own = {sym for sym, _ in p.config}
    given = dict(p.kconfig_symbols)
    nic: dict[str, str] = {"CONFIG_NETDEVICES": "y"}
    for drv, how in p.nic_drivers:
        d = NIC_DRIVERS.get(drv) or NicDriver(_given(given, "NIC driver", drv, p))
        nic.update((sym, "y") for sym in d.under)
        for sym in (d.symbol, *d.with_):
            if nic.get(sym) != "y":  # two drivers needing one bus driver: built in wins
                nic[sym] = how
    fs: dict[str, str] = {}
    for fstype in sorted(fstypes):
        fs.update((sym, "y") for sym in FS_SYMBOLS.get(fstype) or (_given(given, "file system", fstype, p),))

    def group(why: str, options: dict[str, str]) -> Group:
        return Group(why, tuple((s, v) for s, v in options.items() if s not in own))

    groups = [
        group("ATA over Ethernet: the root disk is an AoE target (/dev/etherd/eS.L), a block driver on the "
              "network", {"CONFIG_NET": "y", "CONFIG_BLK_DEV": "y", "CONFIG_ATA_OVER_ETH": p.aoe}),
        group("NIC drivers of this profile, and the buses and menus they sit under (AoE needs the link "
              "only, no IP)", dict(sorted(nic.items()))),
        group("Booting from an initrd (zstd: netbootgen's default; gzip: dracut 059's); devtmpfs for /dev; unix "
              "sockets for systemd and udev", {"CONFIG_BLK_DEV_INITRD": "y", "CONFIG_RD_GZIP": "y",
                                               "CONFIG_RD_ZSTD": "y", "CONFIG_DEVTMPFS": "y", "CONFIG_UNIX": "y"}),
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
    return [g for g in groups if g.options]


def _given(given: dict[str, str], what: str, name: str, p: Profile) -> str:
    """The symbol profile `p`'s kconfig_symbols gives `name`; the loader rejects a profile without one."""
    try:
        return given[name]
    except KeyError:
        raise NetbootgenError(f"internal error: no Kconfig symbol for {what} {name!r} of profile {p.name!r} "
                              "(the inventory loader checks this)") from None


def profile_fstypes(inv: Inventory) -> dict[str, set[str]]:
    """Profile name -> the root file system types of its machines."""
    found: dict[str, set[str]] = {}
    for m in inv.machines.values():
        found.setdefault(m.profile, set()).add(m.fstype)
    return found


def render_fragments(inv: Inventory) -> FileTree:
    hdr = inventory_header(inv)
    fstypes = profile_fstypes(inv)
    files: FileTree = {}
    for p in inv.profiles.values():
        ctx = {"header": hdr, "profile": p.name, "groups": fragment_groups(p, fstypes.get(p.name, ("ext4",)))}
        files[f"kernel/{p.name}.config"] = RenderedFile(render_template("kernel/fragment.config.j2", ctx))
    return files
