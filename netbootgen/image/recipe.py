"""What goes into a Debian root image for a machine: the package list, /etc/fstab, the units and the check
script, as data (no I/O), so that tests can read the recipe without running mmdebstrap."""

from __future__ import annotations

from dataclasses import dataclass

from netbootgen.errors import InputError
from netbootgen.inventory import Inventory, Machine
from netbootgen.render import FileTree, RenderedFile

SUITE = "bookworm"
VARIANT = "minbase"
# What a booted AoE-root machine needs besides minbase: systemd as init, udev, kmod (modprobe), iproute2 (ip),
# dracut-core (the machine rebuilds its own initrd with the installed 95aoe).
BASE_PACKAGES = ("systemd-sysv", "udev", "kmod", "iproute2", "dracut-core")
# Documentation is not needed on a netbooted root; the copyright files are kept.
DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
)
# Root file systems an image can be made in, and the Debian package of their tools (fsck, repair).
FS_PACKAGES = {"ext4": "e2fsprogs", "xfs": "xfsprogs"}
DRACUT_MODULES = "usr/lib/dracut/modules.d"
CHECK_DIR = "var/lib/netbootgen-check"  # where the check unit writes, relative to the root
CHECK_MARKER = "NETBOOTGEN-CHECK-OK"
# printed first by the check unit, which starts once multi-user.target is reached (systemd's own "Reached target"
# line is not shown on a serial console a getty has taken over)
MULTI_USER_MARKER = "NETBOOTGEN-MULTI-USER"
CHECK_DATA_SIZE = 1 << 20  # bytes of the check unit's data file
CHECK_ARG = "netbootgen.check"  # the check unit runs (and powers off) only with this on the kernel command line

CHECK_SCRIPT = f"""#!/bin/sh
# netbootgen check: write files whose contents the host knows, sync, report on the console; the unit then
# powers the machine off through systemd. Runs only when {CHECK_ARG} is on the kernel command line.
set -eu
echo "{MULTI_USER_MARKER} $(systemctl is-active multi-user.target) after $(cut -d' ' -f1 /proc/uptime) s"
dir=/{CHECK_DIR}
mkdir -p "$dir"
previous=$(cat "$dir/boots" 2>/dev/null || echo 0)
boot=$((previous + 1))
# data: the line "netbootgen check boot N" repeated, cut at {CHECK_DATA_SIZE} bytes
yes "netbootgen check boot $boot" 2>/dev/null | head -c {CHECK_DATA_SIZE} > "$dir/data.tmp"
mv "$dir/data.tmp" "$dir/data"
echo "$boot" > "$dir/boots.tmp"
mv "$dir/boots.tmp" "$dir/boots"
sync
echo "{CHECK_MARKER} boot=$boot previous=$previous sha256=$(sha256sum < "$dir/data" | cut -d' ' -f1)"
"""

CHECK_UNIT = f"""[Unit]
Description=netbootgen check: write known files to the AoE root, then power off
After=multi-user.target
ConditionKernelCommandLine={CHECK_ARG}

[Service]
Type=oneshot
ExecStart=/bin/sh /usr/lib/netbootgen/check
ExecStartPost=systemctl --no-block poweroff
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
"""

# A check boot powers off as soon as the check unit is done: no login prompt on the serial console then. agetty
# starts late (Type=idle waits up to 5 s for the boot's jobs) and hangs up the line it takes over, which discards
# console output still queued: the check unit's lines were lost that way on a slow host.
SERIAL_GETTY_DROPIN = f"""[Unit]
ConditionKernelCommandLine=!{CHECK_ARG}
"""
SERIAL_GETTY_DROPIN_PATH = "etc/systemd/system/serial-getty@.service.d/netbootgen-check.conf"

UNUSED_GENERATORS = ("cryptsetup", "gpt-auto", "hibernate-resume", "integritysetup", "veritysetup")

FSTAB_HEADER = "# netbootgen: the root is on AoE; _netdev keeps the network up until it is unmounted\n"


def root_device(inv: Inventory, m: Machine) -> str:
    return f"/dev/etherd/{inv.exports[m.export].target}"


def render_fstab(inv: Inventory, m: Machine) -> str:
    ro = ",ro" if inv.exports[m.export].readonly else ""
    return FSTAB_HEADER + f"{root_device(inv, m)}\t/\t{m.fstype}\tdefaults,_netdev{ro}\t0\t0\n"


def serial_tty(m: Machine) -> str | None:
    """The tty of the machine's serial console ('ttyS0' of 'ttyS0,115200'), None without one."""
    return m.serial_console.split(",")[0] if m.serial_console else None


def packages(m: Machine) -> list[str]:
    """Packages installed on top of minbase, sorted: the base set and the tools of the root's file system."""
    return sorted({*BASE_PACKAGES, FS_PACKAGES[check_fstype(m)]})


def check_fstype(m: Machine) -> str:
    if m.fstype not in FS_PACKAGES:
        raise InputError(f"machines.{m.name}.fstype: {m.fstype!r} is not a file system netbootgen makes images "
                         f"in (one of: {', '.join(FS_PACKAGES)})")
    return m.fstype


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the image's contents (with the Debian archive's state on the day it is built)."""

    machine: str
    fstype: str
    suite: str
    variant: str
    packages: tuple[str, ...]
    dpkg_options: tuple[str, ...]
    files: FileTree  # paths relative to the root
    symlinks: tuple[tuple[str, str], ...]  # (path relative to the root, target)

    def describe(self) -> str:
        """A text that changes whenever the recipe does (part of the image cache key)."""
        lines = [f"machine={self.machine}", f"fstype={self.fstype}", f"suite={self.suite}",
                 f"variant={self.variant}", "packages=" + ",".join(self.packages),
                 "dpkg=" + ",".join(self.dpkg_options)]
        lines += [f"file {name} {f.mode:o}\n{f.text}" for name, f in sorted(self.files.items())]
        lines += [f"link {name} -> {target}" for name, target in self.symlinks]
        return "\n".join(lines)


def debian_recipe(inv: Inventory, m: Machine, module: FileTree) -> Recipe:
    """The recipe of `m`'s root: `module` is the rendered 95aoe (keys "dracut/95aoe/<name>")."""
    files: FileTree = {
        "etc/fstab": RenderedFile(render_fstab(inv, m), 0o644),
        "etc/hostname": RenderedFile(m.name + "\n", 0o644),
        "usr/lib/netbootgen/check": RenderedFile(CHECK_SCRIPT, 0o755),
        "etc/systemd/system/netbootgen-check.service": RenderedFile(CHECK_UNIT, 0o644),
    }
    for name, f in module.items():
        files[DRACUT_MODULES + "/" + name.removeprefix("dracut/")] = f
    links = [
        ("etc/systemd/system/multi-user.target.wants/netbootgen-check.service",
         "/etc/systemd/system/netbootgen-check.service"),
        # no first-boot questions on the console (the root's machine-id is empty until the first boot)
        ("etc/systemd/system/systemd-firstboot.service", "/dev/null"),
        # gettys on tty2-6 when logind is missing: no screen here, and it holds the boot up for seconds
        ("etc/systemd/system/getty-static.service", "/dev/null"),
        # e2scrub needs ext4 on LVM; on an AoE root its reaper only costs 4-5 s of the boot under TCG
        ("etc/systemd/system/e2scrub_reap.service", "/dev/null"),
    ]
    # Generators that look for local disks a diskless AoE machine does not have (gpt-auto probes the AoE root
    # with ioctls the aoe driver does not know); each is a process of its own at every boot and daemon-reload.
    links += [(f"etc/systemd/system-generators/systemd-{name}-generator", "/dev/null") for name in UNUSED_GENERATORS]
    tty = serial_tty(m)
    if tty:
        files[SERIAL_GETTY_DROPIN_PATH] = RenderedFile(SERIAL_GETTY_DROPIN, 0o644)
        links.append((f"etc/systemd/system/getty.target.wants/serial-getty@{tty}.service",
                      "/lib/systemd/system/serial-getty@.service"))
    return Recipe(m.name, m.fstype, SUITE, VARIANT, tuple(packages(m)), DPKG_OPTIONS, files, tuple(sorted(links)))


def check_data(boot: int) -> bytes:
    """The bytes the check unit writes to CHECK_DIR/data on boot number `boot` (1 for the first)."""
    line = f"netbootgen check boot {boot}\n".encode()
    return (line * (CHECK_DATA_SIZE // len(line) + 1))[:CHECK_DATA_SIZE]
