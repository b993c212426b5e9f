"""The TFTP tree: PXELINUX itself, the rendered per-MAC files, and each profile's kernel and initrds."""

from __future__ import annotations

import filecmp
import os
import shutil
import tempfile
from pathlib import Path

from netbootgen.errors import ToolMissing
from netbootgen.output import write_file
from netbootgen.pxe.grub import GRUB_DIR, GRUB_PLATFORM
from netbootgen.pxe.menu import boot_dir
from netbootgen.run import run

PXELINUX = Path("/usr/lib/PXELINUX/pxelinux.0")
LDLINUX = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")
GRUB_MODULES = Path("/usr/lib/grub") / GRUB_PLATFORM  # Debian's grub-efi-amd64-bin


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


def install_grub(tftp: Path) -> None:
    """GRUB for x86-64 UEFI clients, as `grub-mknetdir --subdir=grub` lays it out (core.efi with the prefix
    /grub, and its modules), without fonts, themes or translations. grub-mknetdir writes into a scratch
    folder and only changed files are copied, so that an unchanged tree is not rewritten."""
    if not GRUB_MODULES.is_dir():
        raise ToolMissing(os.fspath(GRUB_MODULES), "install the Debian package grub-efi-amd64-bin")
    with tempfile.TemporaryDirectory(prefix=".grub-", dir=tftp.parent) as tmp:
        run(["grub-mknetdir", f"--net-directory={tmp}", f"--subdir={GRUB_DIR}", f"--directory={GRUB_MODULES}",
             "--locales=", "--fonts=", "--themes="])
        for src in sorted(Path(tmp).rglob("*")):
            if src.is_file():
                install_file(src, tftp / src.relative_to(tmp))


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
