"""Kernel config fragments (mergeable with scripts/kconfig/merge_config.sh), one per profile."""

from __future__ import annotations

from dataclasses import dataclass

from netbootgen.inventory import Inventory, Profile
from netbootgen.modules.aoe import source_name
from netbootgen.render import FileTree, RenderedFile, header, render_template

# NIC driver (module name) -> Kconfig symbol.
NIC_SYMBOLS = {
    "virtio_net": "CONFIG_VIRTIO_NET",
    "e1000": "CONFIG_E1000",
    "e1000e": "CONFIG_E1000E",
    "igb": "CONFIG_IGB",
    "igc": "CONFIG_IGC",
    "ixgbe": "CONFIG_IXGBE",
    "i40e": "CONFIG_I40E",
    "ice": "CONFIG_ICE",
    "r8169": "CONFIG_R8169",
    "tg3": "CONFIG_TIGON3",
    "bnx2": "CONFIG_BNX2",
    "bnxt_en": "CONFIG_BNXT",
    "mlx4_en": "CONFIG_MLX4_EN",
    "mlx5_core": "CONFIG_MLX5_CORE",
    "vmxnet3": "CONFIG_VMXNET3",
    "8139cp": "CONFIG_8139CP",
    "8139too": "CONFIG_8139TOO",
    "ne2k_pci": "CONFIG_NE2K_PCI",
    "pcnet32": "CONFIG_PCNET32",
    "sky2": "CONFIG_SKY2",
    "atl1c": "CONFIG_ATL1C",
}

# NIC drivers that need a bus driver too, with the same choice.
NIC_DEPENDS = {"virtio_net": ["CONFIG_VIRTIO_PCI"], "mlx4_en": ["CONFIG_MLX4_CORE"]}


@dataclass(frozen=True)
class Group:
    why: str
    options: list[tuple[str, str]]


def nic_symbol(driver: str) -> str:
    return NIC_SYMBOLS.get(driver, "CONFIG_" + driver.upper())


def fragment_groups(p: Profile) -> list[Group]:
    nic: list[tuple[str, str]] = []
    for drv, how in p.nic_drivers:
        nic.append((nic_symbol(drv), how))
        nic.extend((dep, how) for dep in NIC_DEPENDS.get(drv, []))
    groups = [
        Group("ATA over Ethernet: the root disk is an AoE target (/dev/etherd/eS.L)", [("CONFIG_ATA_OVER_ETH", p.aoe)]),
        Group("NIC drivers of the machines using this profile (AoE needs the link, no IP)", sorted(set(nic))),
        Group(
            "A diskless boot: devtmpfs makes /dev/etherd without udev; the initrd; AF_PACKET for the network",
            [("CONFIG_DEVTMPFS", "y"), ("CONFIG_BLK_DEV_INITRD", "y"), ("CONFIG_PACKET", "y")],
        ),
        Group("The root file system", [("CONFIG_EXT4_FS", "y")]),
        Group("Serial console", [("CONFIG_SERIAL_8250", "y"), ("CONFIG_SERIAL_8250_CONSOLE", "y")]),
    ]
    if p.config:
        groups.append(Group("Extra options from the inventory", list(p.config)))
    return groups


def render_fragments(inv: Inventory) -> FileTree:
    hdr = header(source_name(inv))
    return {
        f"kernel/{p.name}.config": RenderedFile(
            render_template("kernel/fragment.config.j2", {"header": hdr, "profile": p.name, "groups": fragment_groups(p)})
        )
        for p in inv.profiles.values()
    }
