"""A minimal root file system for boot tests: busybox-static in an ext4 image, made without mounting anything."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from netbootgen.errors import ToolMissing
from netbootgen.run import need_binary, run

BUSYBOX = Path("/bin/busybox")
INIT_MARKER = "NETBOOTGEN-INIT-OK"
DISK_MARKER_FILE = "netbootgen-boot-test"
ROOT_TAG_FILE = "etc/netbootgen-root"  # make_rootfs(tag=...): which image this is, printed by the guest
IDENTITY_MARKER = "NETBOOTGEN-IDENTITY"  # machine=<SMBIOS serial (QemuSpec.serial_number)> root=<the tag>
CMDLINE_BEGIN, CMDLINE_END = "NETBOOTGEN-CMDLINE-BEGIN", "NETBOOTGEN-CMDLINE-END"  # /proc/cmdline between
APPLETS = ("sh", "mount", "umount", "cat", "echo", "sync", "poweroff", "sleep", "ls", "dmesg")

INIT_SCRIPT = f"""#!/bin/busybox sh
# netbootgen boot-test init: report, write to the AoE root, power off.
[ -e /proc/self ] || /bin/busybox mount -t proc proc /proc
[ -d /sys/class ] || /bin/busybox mount -t sysfs sys /sys
machine=$(/bin/busybox cat /sys/class/dmi/id/product_serial 2>/dev/null)
echo "{INIT_MARKER} pid $$ root=$(/bin/busybox grep -o 'root=[^ ]*' /proc/cmdline)"
echo "{IDENTITY_MARKER} machine=$machine root=$(/bin/busybox cat /{ROOT_TAG_FILE} 2>/dev/null)"
echo "{CMDLINE_BEGIN}"; /bin/busybox cat /proc/cmdline; echo "{CMDLINE_END}"
printf 'boot-test %s\\nmachine %s\\n' "$(/bin/busybox cat /proc/sys/kernel/random/boot_id)" "$machine" \\
    > /{DISK_MARKER_FILE}
/bin/busybox sync
echo "netbootgen: wrote /{DISK_MARKER_FILE}, powering off"
/bin/busybox poweroff -f
"""

OS_RELEASE = 'NAME="netbootgen boot-test"\nID=netbootgen-boottest\nPRETTY_NAME="netbootgen boot-test root"\n'


def make_rootfs(image: Path, size_mib: int = 64, *, tag: str | None = None, offset: int = 0,
                length: int | None = None) -> Path:
    """Write an ext4 image holding busybox, /sbin/init and /etc/os-release (systemd's switch-root needs it).

    `tag` goes into /etc/netbootgen-root (the guest prints it: which image it booted). `offset`/`length` (in
    512-byte sectors, as an export's window): the file system starts `offset` sectors into a sparse file of at
    least offset + length sectors."""
    if not BUSYBOX.exists():
        raise ToolMissing("/bin/busybox", "install the Debian package busybox-static")
    mke2fs = need_binary("mke2fs")
    image.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".rootfs-", dir=image.parent) as tmp:
        tree = Path(tmp) / "tree"
        for d in ("bin", "sbin", "etc", "dev", "proc", "sys", "run", "tmp", "usr/lib"):
            (tree / d).mkdir(parents=True)
        shutil.copy2(BUSYBOX, tree / "bin/busybox")
        for applet in APPLETS:
            (tree / "bin" / applet).symlink_to("busybox")
        init = tree / "sbin/init"
        init.write_text(INIT_SCRIPT)
        init.chmod(0o755)
        (tree / "etc/os-release").write_text(OS_RELEASE)
        (tree / "usr/lib/os-release").write_text(OS_RELEASE)
        if tag is not None:
            (tree / ROOT_TAG_FILE).write_text(tag + "\n")
        tmp_img = Path(tmp) / "root.img"
        run([mke2fs, "-q", "-F", "-t", "ext4", "-L", "aoeroot", "-E", "root_owner=0:0", "-d", tree, tmp_img,
             f"{size_mib}M"])
        if offset or length is not None:
            tmp_img = _place(tmp_img, Path(tmp) / "window.img", offset, length)
        os.replace(tmp_img, image)
    return image


def _place(fs: Path, out: Path, offset: int, length: int | None) -> Path:
    """`fs` copied `offset` sectors into a sparse file of at least offset + length sectors."""
    data = fs.read_bytes()
    with out.open("wb") as f:
        f.truncate(offset * 512 + max(len(data), (length or 0) * 512))
        f.seek(offset * 512)
        f.write(data)
    return out


def read_marker(image: Path, offset: int = 0) -> str | None:
    """The marker file the boot-test init wrote to the image (its file system `offset` sectors into it), read
    with debugfs (no mount); None if absent."""
    where = f"{image}?offset={offset * 512}" if offset else image
    proc = run([need_binary("debugfs"), "-R", f"cat /{DISK_MARKER_FILE}", where], check=False, capture=True)
    text = proc.stdout.strip()
    return text if text.startswith("boot-test ") else None
