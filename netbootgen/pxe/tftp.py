"""The TFTP tree: PXELINUX itself, the rendered per-MAC files, and each profile's kernel and initrds."""

from __future__ import annotations

import filecmp
import os
import shutil
from pathlib import Path

from netbootgen.errors import ToolMissing
from netbootgen.output import write_file
from netbootgen.pxe.menu import boot_dir

PXELINUX = Path("/usr/lib/PXELINUX/pxelinux.0")
LDLINUX = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")


def install_file(src: Path, dest: Path) -> bool:
    """Copy `src` to `dest` atomically with mode 0644; False (and no write) when `dest` is already the same."""
    if dest.exists() and filecmp.cmp(src, dest, shallow=False):
        return False
    write_file(dest, src.read_bytes(), 0o644)
    return True


def install_pxelinux(tftp: Path) -> None:
    for src, pkg in ((PXELINUX, "pxelinux"), (LDLINUX, "syslinux-common")):
        if not src.exists():
            raise ToolMissing(os.fspath(src), f"install the Debian package {pkg}")
        install_file(src, tftp / src.name)


def install_boot_files(tftp: Path, profile: str, vmlinuz: Path, initrd: Path) -> None:
    """Install the kernel and the new initrd; the initrd it replaces is kept as initrd.prev.img (never
    overwrite the one that works: the PXELINUX menu's second entry boots it)."""
    d = tftp / boot_dir(profile)
    install_file(vmlinuz, d / "vmlinuz")
    current, previous = d / "initrd.img", d / "initrd.prev.img"
    if current.exists() and not filecmp.cmp(initrd, current, shallow=False):
        os.replace(current, previous)
    install_file(initrd, current)
    if not previous.exists():
        shutil.copyfile(current, previous)
        previous.chmod(0o644)
