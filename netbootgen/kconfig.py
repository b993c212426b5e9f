"""Kconfig tables: the kernel config symbols of the NIC drivers and root file systems netbootgen knows.

Pure data, shared by the inventory loader (which rejects a driver or file system without a symbol) and the
kernel config fragment generator (which sets the symbols).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SYMBOL_RE = re.compile(r"^CONFIG_[A-Z0-9_]+\Z")


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
