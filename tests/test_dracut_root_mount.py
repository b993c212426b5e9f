"""How 95aoe mounts the root: the systemd generator's sysroot.mount, the shell-only initrd's mount hook, and the
root's file-system module loaded early in both.

The generator (aoe-generator.sh) runs as systemd runs it and writes sysroot.mount, which wants
modprobe@FS.service. In a shell-only initrd the cmdline hook starts loading the module in the background, and the
mount hook (aoe-mount-root.sh) checks the root unmounted, then mounts it once, on a real file system.

The hook runs under dash with dracut's dracut-lib.sh and fs-lib.sh, in the private mount namespace of
test_dracut_module's Sandbox: /dev/etherd/e0.1 there is a block node of a loop device holding an ext4 image made
in the test, e2fsck, mount and findmnt are the real ones, /etc/fstab is a file of the sandbox. The ext4 superblock's
mount count tells how often the file system was mounted (rootfs-block's mount-root.sh mounts it twice).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.dracut_sandbox import PRELUDE, Sandbox, run_hook, tool

pytestmark = pytest.mark.usefixtures("dracut_host_untouched")

FS_LIB = Path("/usr/lib/dracut/modules.d/99fs-lib/fs-lib.sh")
DEV = "/dev/etherd/e0.1"

MOUNT_HARNESS = """\
. "$PRELUDE"
. "$FS_LIB"
# dracut's info and warn, appending: they write with ">", and the sandbox's /dev/kmsg is a file, not the device
info() { echo "<30>dracut: $*" >> /dev/kmsg; }
warn() { echo "<28>dracut Warning: $*" >> /dev/kmsg; }
NEWROOT=$TEST_NEWROOT
root=$TEST_ROOT; fstype=$TEST_FSTYPE; rflags=$TEST_RFLAGS
. "$HOOK"
. "$HOOK"  # init.sh sources the mount hooks again while the root is not mounted
if ismounted "$NEWROOT"; then
    echo "MOUNTED $(findmnt -n -o FSTYPE,OPTIONS "$NEWROOT")"
    umount "$NEWROOT"
fi
echo "leftover=$aoe_rootdev$aoe_rootfs$_aoe_fsckopts$_aoe_fsckmode"
"""


@dataclass
class Disk:
    image: Path
    loop: str

    def superblock(self, field: str) -> str:
        out = subprocess.run([tool("dumpe2fs"), "-h", str(self.image)], capture_output=True, text=True,
                             check=True).stdout
        m = re.search(rf"^{re.escape(field)}:\s*(.*)$", out, re.M)
        assert m, out
        return m.group(1).strip()


@pytest.fixture
def disk(tmp_path: Path, sandbox: Sandbox) -> Iterator[Disk]:
    """An ext4 image on a loop device, whose node is the sandbox's /dev/etherd/e0.1."""
    if not FS_LIB.is_file():
        pytest.skip(f"dracut's {FS_LIB} not installed")
    tool("losetup")
    image = tmp_path / "root.img"
    subprocess.run([tool("mkfs.ext4"), "-q", "-F", str(image), "16M"], check=True)
    loop = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True, text=True,
                          check=True).stdout.strip()
    try:
        os.mknod(sandbox.dev / "etherd" / "e0.1", 0o600 | stat.S_IFBLK, os.stat(loop).st_rdev)
        # /usr/sbin (and /sbin) is the sandbox's stub folder: the real e2fsck goes first on the PATH
        shutil.copy(tool("e2fsck"), sandbox.bin / "e2fsck")
        yield Disk(image, loop)
    finally:
        subprocess.run(["losetup", "--detach", loop], check=True)


def run_mount_hook(module_dir: Path, sandbox: Sandbox, cmdline: str, *, root: str = f"block:{DEV}",
                   fstype: str = "ext4", rflags: str = "rw") -> tuple[str, str, str]:
    """(the harness's output, what went to /dev/kmsg, the sandbox's /etc/fstab) after sourcing the hook twice."""
    fstab = sandbox.top / "fstab"
    fstab.write_text("")
    sandbox.binds["/etc/fstab"] = fstab
    newroot = sandbox.top / "sysroot"
    newroot.mkdir(exist_ok=True)
    prelude, harness = sandbox.top / "prelude.sh", sandbox.top / "mount-harness.sh"
    prelude.write_text(PRELUDE)
    harness.write_text(MOUNT_HARNESS)
    env = {"TEST_CMDLINE": cmdline, "PRELUDE": str(prelude), "AOE_LIB": str(module_dir / "aoe-lib.sh"),
           "FS_LIB": str(FS_LIB), "HOOK": str(module_dir / "aoe-mount-root.sh"), "TEST_NEWROOT": str(newroot),
           "TEST_ROOT": root, "TEST_FSTYPE": fstype, "TEST_RFLAGS": rflags}
    proc = sandbox.run([tool("dash"), str(harness)], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, (sandbox.dev / "kmsg").read_text(), fstab.read_text()


def test_checks_then_mounts_once(module_dir: Path, sandbox: Sandbox, disk: Disk) -> None:
    fstab_before = Path("/etc/fstab").read_bytes()
    out, kmsg, fstab = run_mount_hook(module_dir, sandbox, "root=aoe:e0.1:ext4 rw")
    assert re.search(r"^MOUNTED ext4 +rw,", out, re.M), out
    assert "<30>dracut: issuing e2fsck -a /dev/etherd/e0.1\n" in kmsg
    assert "<30>dracut: /dev/etherd/e0.1: clean, " in kmsg  # e2fsck's preen of a clean file system
    # e2fsck ran on the unmounted disk (on a mounted one it stops with status 8: "returned with 8")
    assert "returned with" not in kmsg and "Warning" not in kmsg, kmsg
    assert f"<30>dracut: 95aoe: mounted {DEV} (ext4) with -o rw\n" in kmsg
    assert disk.superblock("Mount count") == "1"  # mount-root.sh: 2 (read-only, then again after fsck)
    assert disk.superblock("Filesystem state") == "clean"
    assert fstab == f"{DEV} {sandbox.top / 'sysroot'} ext4 rw 0 0\n"
    assert "leftover=\n" in out
    assert Path("/etc/fstab").read_bytes() == fstab_before


def test_read_only_root_and_root_flags(module_dir: Path, sandbox: Sandbox, disk: Disk) -> None:
    out, kmsg, fstab = run_mount_hook(module_dir, sandbox, "root=aoe:e0.1:ext4:noatime ro",
                                      rflags="noatime,ro")
    assert re.search(r"^MOUNTED ext4 +ro,noatime", out, re.M), out
    assert "issuing e2fsck -a" in kmsg
    assert disk.superblock("Mount count") == "0"  # a read-only mount writes nothing to the superblock
    assert fstab.endswith(" ext4 noatime,ro 0 0\n")


@pytest.mark.parametrize("cmdline", ["rd.skipfsck", "fastboot", "fsck.mode=skip"])
def test_no_check_when_the_command_line_says_so(module_dir: Path, sandbox: Sandbox, disk: Disk,
                                                cmdline: str) -> None:
    out, kmsg, _ = run_mount_hook(module_dir, sandbox, f"root=aoe:e0.1 {cmdline}")
    assert out.startswith("MOUNTED ext4"), out
    assert "e2fsck" not in kmsg and disk.superblock("Mount count") == "1"


def test_no_check_for_netdev_mounts(module_dir: Path, sandbox: Sandbox, disk: Disk) -> None:
    out, kmsg, _ = run_mount_hook(module_dir, sandbox, "root=aoe:e0.1", rflags="rw,_netdev")
    assert "e2fsck" not in kmsg


@pytest.mark.parametrize("cmdline", ["forcefsck", "fsck.mode=force"])
def test_forced_check(module_dir: Path, sandbox: Sandbox, disk: Disk, cmdline: str) -> None:
    out, kmsg, _ = run_mount_hook(module_dir, sandbox, f"root=aoe:e0.1 {cmdline}")
    assert out.startswith("MOUNTED ext4"), out
    # one option word: dracut 059's mount-root.sh hands e2fsck "-a -f ", which it rejects (status 16)
    assert "<30>dracut: issuing e2fsck -pf /dev/etherd/e0.1\n" in kmsg and "returned with" not in kmsg, kmsg
    # a full check of the clean file system: its summary without "clean,"
    assert re.search(r"<30>dracut: /dev/etherd/e0.1: \d+/\d+ files", kmsg), kmsg
    assert disk.superblock("Mount count") == "1"


def test_other_roots_are_left_to_mount_root(module_dir: Path, sandbox: Sandbox, disk: Disk) -> None:
    for root in ("block:/dev/sda1", "block:/dev/disk/by-uuid/0000", ""):
        out, kmsg, fstab = run_mount_hook(module_dir, sandbox, "root=/dev/sda1", root=root)
        assert "MOUNTED" not in out and kmsg == "" and fstab == "", (root, out, kmsg)
    out, kmsg, _ = run_mount_hook(module_dir, sandbox, "root=aoe:e0.1 root.journaldev=/dev/sdb1")
    assert "MOUNTED" not in out and kmsg == ""
    assert disk.superblock("Mount count") == "0"


def test_a_failed_mount_is_left_to_mount_root(module_dir: Path, sandbox: Sandbox, disk: Disk) -> None:
    out, kmsg, fstab = run_mount_hook(module_dir, sandbox, "root=aoe:e0.1:xfs", fstype="xfs")
    assert "MOUNTED" not in out and fstab == ""
    # tried once although sourced twice; xfs has no fsck in the initrd (fs-lib's fsck_able)
    assert kmsg.count("mount-root.sh tries next") == 1, kmsg
    assert "<28>dracut Warning: 95aoe: could not mount /dev/etherd/e0.1 (xfs) with -o rw; mount-root.sh tries next\n" \
        in kmsg
    assert "e2fsck" not in kmsg


@pytest.mark.parametrize(
    ("cmdline", "systemd", "expect"),
    [
        ("root=aoe:e0.1:ext4", "", ["modprobe [-b] [-q] [ext4]"]),
        ("root=dhcp netroot=aoe:e0.1:xfs", "", ["modprobe [-b] [-q] [xfs]"]),
        ("root=aoe:e0.1 rootfstype=btrfs", "", []),  # rootfstype= is rootfs-block's, read after this hook
        ("root=aoe:e0.1:ext4", "1", []),  # dracut-cmdline.service: the generator's modprobe@ext4.service
        ("root=aoe:e0.1", "", []),  # fstype auto: the mount finds out
        ("root=/dev/etherd/e0.1", "", []),
        ("root=UUID=0f1e-77 netroot=aoe:e0.1:ext4", "", []),  # not the root: rootfs-block mounts another disk
    ],
)
def test_cmdline_hook_loads_the_root_fs_module_early(module_dir: Path, sandbox: Sandbox, cmdline: str,
                                                     systemd: str, expect: list[str]) -> None:
    run_hook(module_dir, sandbox, cmdline, **({"DRACUT_SYSTEMD": systemd} if systemd else {}))
    assert [c for c in sandbox.calls() if c.startswith("modprobe ")] == expect


# --- aoe-generator.sh: the systemd generator, run as systemd runs it (argv: normal early late) ---

def run_generator(module_dir: Path, sandbox: Sandbox, cmdline: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    prelude = sandbox.top / "prelude.sh"
    prelude.write_text(PRELUDE)
    out = sandbox.top / "generator"
    dirs = [str(out / d) for d in ("normal", "early", "late")]
    env = {"TEST_CMDLINE": cmdline, "PRELUDE": str(prelude), "AOE_LIB": str(module_dir / "aoe-lib.sh"),
           "GEN": str(module_dir / "aoe-generator.sh")}
    # sh -c's first operand is $0: the name systemd gives the generator in the initrd
    proc = sandbox.run([tool("dash"), "-c", '. "$PRELUDE"; . "$GEN"', "dracut-aoe-generator", *dirs], env,
                       namespace=False)
    return proc, out / "early"


def unit(*lines: str, wants: str = "") -> str:
    """sysroot.mount; `wants`: the file system whose module loads early (modprobe@FS.service)."""
    return "\n".join(["# Automatically generated by dracut-aoe-generator", "[Unit]", "Before=initrd-root-fs.target",
                      *([f"Wants=modprobe@{wants}.service"] if wants else []),
                      "[Mount]", "Where=/sysroot", *lines]) + "\n"


@pytest.mark.parametrize(
    ("cmdline", "expect"),
    [
        ("root=aoe:e0.1", unit("What=/dev/etherd/e0.1", "Options=_netdev")),
        ("root=aoe:e0.1:ext4:noatime rootflags=discard rw",
         unit("What=/dev/etherd/e0.1", "Options=discard,noatime,rw,_netdev", "Type=ext4", wants="ext4")),
        ("root=aoe:e3.4 rootfstype=xfs ro",
         unit("What=/dev/etherd/e3.4", "Options=ro,_netdev", "Type=xfs", wants="xfs")),
        ("root=aoe:e3.4::noatime rootfstype=auto", unit("What=/dev/etherd/e3.4", "Options=noatime,_netdev")),
        # no modprobe@ unit for a type that is not a module name
        ("root=aoe:e3.4 rootfstype=fuse.sshfs", unit("What=/dev/etherd/e3.4", "Options=_netdev", "Type=fuse.sshfs")),
        ("root=dhcp netroot=aoe:e7.9:ext4",
         unit("What=/dev/etherd/e7.9", "Options=_netdev", "Type=ext4", wants="ext4")),
        ("netroot=aoe:e7.9:xfs", unit("What=/dev/etherd/e7.9", "Options=_netdev", "Type=xfs", wants="xfs")),
        # a hostonly build names an AoE root by device number; netroot's eS.L is stable
        ("root=/dev/block/152:16 rootfstype=ext4 rootflags=rw,relatime netroot=aoe:e0.1:ext4",
         unit("What=/dev/etherd/e0.1", "Options=rw,relatime,_netdev", "Type=ext4", wants="ext4")),
        # dracut's getarg: the last of a repeated argument wins
        ("root=aoe:e0.1:ext4 root=aoe:e5.6:xfs",
         unit("What=/dev/etherd/e5.6", "Options=_netdev", "Type=xfs", wants="xfs")),
    ],
)
def test_generator_writes_the_sysroot_mount(module_dir: Path, sandbox: Sandbox, cmdline: str, expect: str) -> None:
    proc, early = run_generator(module_dir, sandbox, cmdline)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    extra = ["dev-block-152:16.device.d", "dev-block-152:16.device.d/timeout.conf"] if "152:16" in cmdline else []
    assert sorted(p.relative_to(early).as_posix() for p in early.rglob("*")) == sorted([
        "initrd-root-fs.target.requires", "initrd-root-fs.target.requires/sysroot.mount", "sysroot.mount", *extra])
    if extra:  # dracut-rootfs-generator's endless wait for a device unit systemd never creates, cut short
        assert (early / extra[1]).read_text() == "[Unit]\nJobTimeoutSec=1\nJobRunningTimeoutSec=1\n"
    assert (early / "sysroot.mount").read_text() == expect
    link = early / "initrd-root-fs.target.requires" / "sysroot.mount"
    assert os.readlink(link) == "../sysroot.mount" and link.resolve() == (early / "sysroot.mount").resolve()
    verify = subprocess.run([tool("systemd-analyze"), "verify", "--man=no", str(early / "sysroot.mount")],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    assert "Unknown" not in verify.stderr and "ignoring" not in verify.stderr, verify.stderr


@pytest.mark.parametrize("cmdline", ["root=/dev/sda1", "root=/dev/etherd/e0.1", "root=aoe:e0.1 root=/dev/sda1", "",
                                     # a hostonly build: dracut-rootfs-generator mounts root=UUID=...
                                     "root=UUID=0f1e-77 rootfstype=ext4 netroot=aoe:e0.1:ext4",
                                     "netroot=aoe:e0.1:ext4 root=UUID=0f1e-77 rootfstype=ext4",
                                     "root=/dev/etherd/e0.1p1 netroot=aoe:e0.1", "root=/dev/block/152:16"])
def test_generator_leaves_other_roots_alone(module_dir: Path, sandbox: Sandbox, cmdline: str) -> None:
    proc, early = run_generator(module_dir, sandbox, cmdline)
    assert proc.returncode == 0, proc.stderr
    assert not early.exists()  # plain /dev/etherd/... is systemd-fstab-generator's
