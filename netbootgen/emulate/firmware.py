"""The guest's firmware: SeaBIOS (QEMU's default) or OVMF (UEFI), and the boot stages each shows.

With OVMF, QEMU's NIC option ROM is iPXE's EFI driver: its banner is the firmware stage (SeaBIOS's is
"Booting from ROM" on its debug port), and GRUB (core.efi from the DHCP server, then the per-MAC
grub.cfg-01-MAC, whose `echo` line names the entry it boots) takes PXELINUX's place.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from netbootgen.emulate.console import Stage
from netbootgen.emulate.qemu import OVMF_CODE, OVMF_VARS
from netbootgen.errors import InputError, ToolMissing

FIRMWARES = ("bios", "uefi")
UEFI_FIRMWARE = Stage("firmware", re.compile(r"iPXE \S+ -- Open Source Network Boot Firmware"))
GRUB = Stage("grub", re.compile(r": booting current in \d+ s"))  # the per-MAC file's echo (netbootgen.pxe.grub)


def uefi_vars(work: Path) -> Path:
    """A fresh copy of OVMF's variable store for one guest (the firmware writes to it)."""
    for path in (OVMF_CODE, OVMF_VARS):
        if not path.exists():
            raise ToolMissing(str(path), "install the Debian package ovmf")
    dest = work / "OVMF_VARS.fd"
    shutil.copyfile(OVMF_VARS, dest)
    return dest


def firmware_stages(firmware: str, stages: Sequence[Stage]) -> list[Stage]:
    """boot-test's stages for `firmware`: for UEFI, iPXE's EFI banner and GRUB instead of SeaBIOS and PXELINUX."""
    if firmware not in FIRMWARES:
        raise InputError(f"--firmware must be bios or uefi, not {firmware!r}")
    if firmware == "bios":
        return list(stages)
    swap = {"firmware": UEFI_FIRMWARE, "pxelinux": GRUB}
    return [swap.get(s.name, s) for s in stages]
