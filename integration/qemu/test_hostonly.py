"""The seed's host-only workflow: boot the Debian root, run `dracut --hostonly` inside it (the guest's own
dracut 059 with the installed 95aoe, or dracut-ng 106), take the new initrd out of the image without mounting
it, and boot that initrd with no `root=` on the kernel command line to multi-user and a clean poweroff.

The guest gets what it needs on a second AoE disk, e0.2, served by the same target: the kernel's modules (the
image has none: the kernel comes from the TFTP server) and the dracut-ng tree with 95aoe. A unit injected into a
copy of the image with `debugfs -w` (no mount) builds the initrd before multi-user.target when the kernel command
line says `nbtest.hostonly`.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from netbootgen.cache import cache_dir
from netbootgen.emulate.boottest import BootTestOptions, BootTestResult, boot_test
from netbootgen.fleet import kernel_args
from netbootgen.generate import render_inventory
from netbootgen.image.build import build_image, copy_image
from netbootgen.image.inspect import read_file
from netbootgen.inventory import load_inventory
from netbootgen.kernel.fetch import profile_kernel
from netbootgen.modules.dracut_ng import fetch_dracut_ng
from netbootgen.modules.inspect import inspect_initrd
from netbootgen.run import run

INITRD = "/boot/initrd-hostonly.img"
DRACUT_LOG = "/var/log/netbootgen-hostonly.log"
BUILT_MARKER = "NETBOOTGEN-HOSTONLY-BUILT"
FAILED_MARKER = "NETBOOTGEN-HOSTONLY-FAILED"

GUEST_SCRIPT = f"""#!/bin/sh
# netbootgen test: build a host-only initrd of the running kernel with the machine's dracut (or dracut-ng from
# the tools disk, nbtest.dracut=ng), as a user would after netbooting. dracut's output goes to {DRACUT_LOG} (the
# console stays free for systemd's status lines); the result is reported through the kernel log.
set -eu
exec > {DRACUT_LOG} 2>&1
trap 'echo "<27>{FAILED_MARKER} $?" > /dev/kmsg' EXIT
tools=/run/nbtools
mkdir -p "$tools" /boot
i=0
while [ ! -b /dev/etherd/e0.2 ] && [ $i -lt 60 ]; do
    echo > /dev/etherd/discover
    sleep 1
    i=$((i + 1))
done
mount -o ro /dev/etherd/e0.2 "$tools"
kver=$(uname -r)
# gzip -1: the default gzip took 100 s under TCG; a boot of the uncompressed 52 MB initrd stalled once here
set -- --hostonly --hostonly-cmdline --force --no-early-microcode --compress "gzip -1" --kver "$kver" \\
    --kmoddir "$tools/lib/modules/$kver"
case " $(cat /proc/cmdline) " in
    *" nbtest.dracut=ng "*) dracutbasedir=$tools/ng/usr/lib/dracut "$tools/ng/usr/bin/dracut" "$@" {INITRD} ;;
    *) dracut "$@" {INITRD} ;;
esac
sync
umount "$tools"
trap - EXIT
echo "<29>{BUILT_MARKER} $(stat -c %s {INITRD})" > /dev/kmsg
"""

GUEST_UNIT = """[Unit]
Description=netbootgen test: build a host-only initrd
Before=multi-user.target netbootgen-check.service
ConditionKernelCommandLine=nbtest.hostonly

[Service]
Type=oneshot
ExecStart=/usr/lib/netbootgen/hostonly
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
"""


def hardlink_tree(src: Path, dest: Path) -> None:
    """`src` at `dest`, hard-linked where possible (the kernel's 400 MB of modules), else copied."""

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dest, symlinks=True, copy_function=link)


def tools_disk(tmp: Path, kver_moddir: Path, module_files: dict[str, str]) -> Path:
    """An ext4 image (mke2fs -d, no mount) with lib/modules/<kver>/ (dracut wants that path) and the dracut-ng tree
    plus the rendered 95aoe."""
    stage = tmp / "tools"
    hardlink_tree(kver_moddir, stage / "lib" / "modules" / kver_moddir.name)
    ng = fetch_dracut_ng(cache_dir())
    hardlink_tree(ng.basedir.parent.parent, stage / "ng" / "usr")
    for name, text in module_files.items():
        dest = stage / "ng" / "usr" / "lib" / "dracut" / "modules.d" / Path(name).relative_to("dracut")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text)
        dest.chmod(0o755)
    image = tmp / "tools.img"
    with image.open("wb") as f:
        f.truncate(1 << 30)
    run(["mke2fs", "-q", "-t", "ext4", "-d", stage, "-F", image])
    shutil.rmtree(stage)
    return image


def inject(image: Path, tmp: Path) -> None:
    """Add the host-only unit and its script to an ext4 image with debugfs -w (no mount)."""
    script, unit = tmp / "hostonly", tmp / "netbootgen-hostonly.service"
    script.write_text(GUEST_SCRIPT)
    script.chmod(0o755)
    unit.write_text(GUEST_UNIT)
    unit.chmod(0o644)
    cmds = tmp / "debugfs.cmds"
    cmds.write_text(
        f"cd /usr/lib/netbootgen\nwrite {script} hostonly\n"
        f"cd /etc/systemd/system\nwrite {unit} netbootgen-hostonly.service\n"
        "symlink /etc/systemd/system/multi-user.target.wants/netbootgen-hostonly.service "
        "/etc/systemd/system/netbootgen-hostonly.service\n"
    )
    run(["debugfs", "-w", "-f", cmds, image])
    assert read_file(image, "ext4", "/usr/lib/netbootgen/hostonly") == GUEST_SCRIPT.encode()


def stages_ok(result: BootTestResult) -> None:
    failed = [s.name for s in result.report.stages if not s.ok]
    assert not failed, f"stages not reached: {failed}\n{result.report.console[-6000:]}"
    assert result.root_check is not None and result.root_check.ok, result.root_check


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tools disk, made once for both dracuts (the kernel's modules are 400 MB)."""
    inv = load_inventory(None)
    module = {k: f.text for k, f in render_inventory(inv).items() if k.startswith("dracut/95aoe/")}
    kernel = profile_kernel(inv.profiles[inv.machine(None).profile], cache_dir())
    return tools_disk(tmp_path_factory.mktemp("tools"), kernel.moddir, module)


@pytest.mark.parametrize("dracut", ["system", "ng"])
def test_hostonly_initrd_built_in_the_guest_boots_without_root(tmp_path: Path, tools: Path, dracut: str) -> None:
    inv = load_inventory(None)
    m = inv.machine(None)
    cache = cache_dir()
    built = build_image(inv, m.name, cache)
    image = copy_image(built.path, tmp_path / "root.img")
    inject(image, tmp_path)

    # 1. Boot the Debian root from the inventory's initrd; the guest builds its host-only initrd into /boot.
    args = (
        *kernel_args(inv, m),
        "netbootgen.check",
        "nbtest.hostonly",
        *(["nbtest.dracut=ng"] if dracut == "ng" else []),
    )
    first = boot_test(
        inv,
        BootTestOptions(
            machine=m.name,
            via="direct",
            root_image=image,
            persist=True,
            kernel_args=args,
            serve_extra=("--export", f"0.2={tools}"),
            stage_timeout=900,
            workdir=tmp_path / "boot1",
        ),
        cache,
        print,
    )
    console = first.report.console
    log = (read_file(image, "ext4", DRACUT_LOG) or b"").decode(errors="replace")
    assert BUILT_MARKER in console, f"{console[-3000:]}\n--- {DRACUT_LOG}:\n{log[-6000:]}"
    stages_ok(first)

    # 2. Take the initrd out of the image (debugfs, no mount) and look at what the host-only build wrote.
    data = read_file(image, "ext4", INITRD)
    assert data, f"{INITRD} is not in the image"
    initrd = tmp_path / "initrd-hostonly.img"
    initrd.write_bytes(data)
    report = inspect_initrd(initrd)
    conf = "\n".join(report.cmdline.values())
    assert "netroot=aoe:e0.1:ext4" in report.cmdline.get("etc/cmdline.d/95aoe.conf", ""), report.cmdline
    # rootfs-block's own root= (an AoE disk has no /dev/disk/by-* name: root=/dev/block/152:N), which must not
    # hide the AoE root
    assert re.search(r"(^|\s)root=/dev/block/152:\d+", conf), report.cmdline
    assert "aoe" in report.dracut_modules and report.has_module("aoe") and report.has_module("ext4")

    # 3. Boot that initrd with no root= at all on the kernel command line, to multi-user and a clean poweroff.
    no_root = tuple(a for a in kernel_args(inv, m) if not a.startswith("root=")) + ("netbootgen.check",)
    assert not [a for a in no_root if a.startswith(("root=", "netroot="))]
    second = boot_test(
        inv,
        BootTestOptions(
            machine=m.name,
            via="direct",
            root_image=image,
            persist=True,
            initrd_path=initrd,
            kernel_args=no_root,
            stage_timeout=600,
            workdir=tmp_path / "boot2",
        ),
        cache,
        print,
    )
    console = second.report.console
    command_line = next(ln for ln in console.splitlines() if "Command line:" in ln)
    assert " root=" not in command_line and "netroot=" not in command_line, command_line
    assert "95aoe: root on /dev/etherd/e0.1 (AoE shelf 0 slot 1" in console
    assert BUILT_MARKER not in console  # the unit ran in the first boot only
    stages_ok(second)
    assert second.root_check is not None and second.root_check.boots == 2  # it saw the first boot's writes
