"""Derived facts of a validated inventory, computed in one place: an export's allowed MACs, a machine's MTU
and its kernel command line. Generators, the AoE target and emulation all ask here."""

from __future__ import annotations

from netbootgen.inventory import Export, Inventory, Machine


def allowed_macs(inv: Inventory, ex: Export) -> list[str]:
    """The MACs (every NIC) of the machines that boot from `ex`, sorted: what vblade's -m list and
    `netbootgen serve --server` allow (deny by default: an unused export allows nobody)."""
    return sorted(mac for m in inv.export_users.get(ex.name, ()) for mac in m.macs)


def machine_mtu(inv: Inventory, m: Machine) -> int:
    """The MTU of `m`'s AoE link: its own `mtu`, else that of the server exporting its root."""
    return m.mtu if m.mtu is not None else inv.servers[inv.exports[m.export].server].mtu


# The kernel module of a root file system type, where it is not named as the type (ext2/ext3: ext4's driver).
FS_MODULES = {"ext2": "ext4", "ext3": "ext4"}


def fs_modules(inv: Inventory, profile: str) -> list[str]:
    """The file-system kernel modules an initrd of `profile` needs: those of its machines' root `fstype`s,
    sorted (ext4 for a profile no machine uses)."""
    types = {m.fstype for m in inv.machines.values() if m.profile == profile} or {"ext4"}
    return sorted({FS_MODULES.get(t, t) for t in types})


def kernel_args(inv: Inventory, m: Machine) -> list[str]:
    """The kernel command line of `m` (the PXELINUX entries and a direct boot use the same one).

    rd.aoe.mtu is given only when the machine sets its own MTU: without it 95aoe keeps the NIC's default."""
    ex = inv.exports[m.export]
    args = [f"root=aoe:{ex.target}:{m.fstype}", "ro" if ex.readonly else "rw"]
    if m.aoe_interfaces:
        args.append("rd.aoe.iflist=" + ",".join(m.aoe_interfaces))
    if m.mtu is not None:
        args.append(f"rd.aoe.mtu={m.mtu}")
    if m.serial_console:
        args.append(f"console={m.serial_console}")
    args.extend(m.kernel_args)
    return args
