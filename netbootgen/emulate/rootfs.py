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
APPLETS = ("sh", "mount", "umount", "cat", "echo", "sync", "poweroff", "sleep", "ls", "dmesg")

INIT_SCRIPT = f"""#!/bin/busybox sh
# netbootgen boot-test init: report, write to the AoE root, power off.
[ -e /proc/self ] || /bin/busybox mount -t proc proc /proc
echo "{INIT_MARKER} pid $$ root=$(/bin/busybox grep -o 'root=[^ ]*' /proc/cmdline)"
echo "boot-test $(/bin/busybox cat /proc/sys/kernel/random/boot_id)" > /{DISK_MARKER_FILE}
/bin/busybox sync
echo "netbootgen: wrote /{DISK_MARKER_FILE}, powering off"
/bin/busybox poweroff -f
"""

OS_RELEASE = 'NAME="netbootgen boot-test"\nID=netbootgen-boottest\nPRETTY_NAME="netbootgen boot-test root"\n'


def make_rootfs(image: Path, size_mib: int = 64) -> Path:
    """Write an ext4 image holding busybox, /sbin/init and /etc/os-release (systemd's switch-root needs it)."""
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
        tmp_img = Path(tmp) / "root.img"
        run([mke2fs, "-q", "-F", "-t", "ext4", "-L", "aoeroot", "-E", "root_owner=0:0", "-d", tree, tmp_img,
             f"{size_mib}M"])
        os.replace(tmp_img, image)
    return image


def read_marker(image: Path) -> str | None:
    """The marker file the boot-test init wrote to the image, read with debugfs (no mount); None if absent."""
    proc = run([need_binary("debugfs"), "-R", f"cat /{DISK_MARKER_FILE}", image], check=False, capture=True)
    text = proc.stdout.strip()
    return text if text.startswith("boot-test ") else None
