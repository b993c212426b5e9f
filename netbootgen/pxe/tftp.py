"""The TFTP tree: PXELINUX itself, the rendered per-MAC files, and each profile's current and previous kernel
and initrd."""

from __future__ import annotations

import filecmp
import os
import tempfile
from pathlib import Path

from netbootgen.errors import ToolMissing
from netbootgen.output import write_file
from netbootgen.pxe.grub import GRUB_DIR, GRUB_PLATFORM
from netbootgen.pxe.menu import INITRD, KERNEL, PREV_INITRD, PREV_KERNEL, boot_dir
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


def same_bytes(src: Path, dest: Path) -> bool:
    return dest.exists() and filecmp.cmp(src, dest, shallow=False)


def install_boot_files(tftp: Path, profile: str, vmlinuz: Path, initrd: Path) -> bool:
    """Install `vmlinuz` and `initrd` as the profile's current pair (vmlinuz, initrd.img). When either differs
    from the current pair, that pair is first copied to the previous pair (vmlinuz.prev, initrd.prev.img), the
    two together: the menus' `previous` entry boots the kernel and initrd that booted together, never a new
    kernel with the old initrd (whose modules would not match it). An unchanged pair changes nothing; the first
    install copies the current pair to the previous one. Every file is replaced atomically and the current pair
    is never missing. True when the previous pair was replaced."""
    d = tftp / boot_dir(profile)
    kernel, image, prev_kernel, prev_image = (d / n for n in (KERNEL, INITRD, PREV_KERNEL, PREV_INITRD))
    rotated = False
    if kernel.exists() and image.exists():
        if not (same_bytes(vmlinuz, kernel) and same_bytes(initrd, image)):
            install_file(kernel, prev_kernel)
            install_file(image, prev_image)
            rotated = True
        elif prev_image.exists() and not prev_kernel.exists():
            # a tree from before vmlinuz.prev: its `previous` entry booted the current kernel
            install_file(kernel, prev_kernel)
    install_file(vmlinuz, kernel)
    install_file(initrd, image)
    if not (prev_kernel.exists() and prev_image.exists()):  # the first install (or half a pair): a copy
        install_file(kernel, prev_kernel)
        install_file(image, prev_image)
    return rotated
