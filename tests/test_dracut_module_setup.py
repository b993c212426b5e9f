"""95aoe's module-setup.sh, run by dracut (bash) with its functions defined: check, depends, installkernel,
cmdline and install print what they ask dracut for (the harness's stand-ins echo their arguments).

They run in tests/dracut_sandbox.py's Sandbox (a private mount namespace with a made-up /sys/dev/block).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from netbootgen.generate import render_inventory
from netbootgen.inventory import load_inventory
from netbootgen.output import write_tree
from tests.conftest import BASE_INVENTORY, edit
from tests.dracut_sandbox import Sandbox, tool

pytestmark = pytest.mark.usefixtures("dracut_host_untouched")

MODULE_HARNESS = """\
find_root_block_device() { echo "$ROOT_MAJMIN"; }
find_mp_fstype() { echo "$ROOT_FSTYPE"; }
instmods() { echo "instmods${hostonly:+ (hostonly)} $*"; }
declare -A host_fs_types=()
[[ $HOST_FSTYPE ]] && host_fs_types[/dev/block/$ROOT_MAJMIN]=$HOST_FSTYPE
inst_multiple() { echo "inst_multiple $*"; }
inst_simple() { echo "inst_simple $*"; }
inst_hook() { echo "inst_hook $*"; }
inst_script() { echo "inst_script $*"; }
ln_r() { echo "ln_r $*"; }
find_binary() { echo "/usr/bin/$1"; }
dracut_module_included() { [[ " $DRACUT_MODULES " == *" $1 "* ]]; }
dracut_need_initqueue() { echo dracut_need_initqueue; }
. "$MODULE_SETUP"
"$1"
"""


def run_module_setup(module_dir: Path, sandbox: Sandbox, function: str, root_majmin: str, **env: str) -> str:
    """Run one of module-setup.sh's functions; /sys/dev/block holds AoE disk 152:16 (e0.1) and its partition
    152:17 (e0.1p1), and a SCSI disk 8:1, linked as sysfs links them."""
    block = sandbox.top / "block"
    for majmin, name in (("152:16", "etherd!e0.1"), ("152:17", "etherd!e0.1p1"), ("8:1", "sda1")):
        (sandbox.top / "devices" / name).mkdir(parents=True, exist_ok=True)
        if not (block / majmin).is_symlink():
            (block / majmin).symlink_to(sandbox.top / "devices" / name)
    harness = sandbox.top / "module-harness.sh"
    harness.write_text(MODULE_HARNESS)
    env = {"ROOT_MAJMIN": root_majmin, "ROOT_FSTYPE": "ext4", "MODULE_SETUP": str(module_dir / "module-setup.sh"),
           **env}
    proc = sandbox.run([tool("bash"), str(harness), function], env)
    assert proc.returncode == 0 and proc.stderr == "", proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.parametrize(
    ("majmin", "fstype", "expect"),
    [("152:16", "ext4", " netroot=aoe:e0.1:ext4"), ("152:17", "xfs", " netroot=aoe:e0.1p1:xfs"),
     ("152:16", "", " netroot=aoe:e0.1"), ("8:1", "ext4", "")],
)
def test_hostonly_cmdline_names_the_aoe_root(module_dir: Path, sandbox: Sandbox, majmin: str, fstype: str,
                                             expect: str) -> None:
    """netroot=, never root=: rootfs-block writes the hostonly root= itself, and of two root= the later wins."""
    assert run_module_setup(module_dir, sandbox, "cmdline", majmin, ROOT_FSTYPE=fstype) == expect


def render_fleet(tmp_path: Path, fstypes: tuple[str, ...]) -> Path:
    """The 95aoe module of BASE_INVENTORY with node1 and node2 on these root file systems."""
    text = edit(BASE_INVENTORY, ('export = "root-node1"', f'export = "root-node1"\nfstype = "{fstypes[0]}"'),
                ('export = "root-node2"', f'export = "root-node2"\nfstype = "{fstypes[1]}"'))
    (tmp_path / "inv.toml").write_text(text)
    write_tree(tmp_path / "out", render_inventory(load_inventory(tmp_path / "inv.toml")))
    return tmp_path / "out" / "dracut" / "95aoe"


@pytest.mark.parametrize(
    ("fstypes", "hostonly", "host_fstype", "fs_line"),
    [
        (("ext4", "ext4"), "", "", "instmods ext4"),
        (("xfs", "ext4"), "", "", "instmods ext4 xfs"),  # --no-hostonly: every machine's root fstype
        (("xfs", "ext4"), "1", "xfs", "instmods xfs"),  # hostonly: this machine's root, as dracut found it
        (("xfs", "ext4"), "1", "", "instmods ext4 xfs"),  # hostonly, but dracut found none: the fleet's
    ],
)
def test_installkernel(tmp_path: Path, sandbox: Sandbox, fstypes: tuple[str, str], hostonly: str, host_fstype: str,
                       fs_line: str) -> None:
    module = render_fleet(tmp_path, fstypes)
    out = run_module_setup(module, sandbox, "installkernel", "152:16", hostonly=hostonly, HOST_FSTYPE=host_fstype)
    # aoe with -c (a kernel without it fails the build); instmods always runs with hostonly='' (every driver)
    assert out.splitlines() == ["instmods -c aoe", "instmods virtio_net", fs_line]


def test_depends_on_initqueue_only_where_dracut_has_it(tmp_path: Path, sandbox: Sandbox, module_dir: Path) -> None:
    """dracut 059 and dracut-ng 106 keep the initqueue in 99base; later dracut-ng has an initqueue module."""
    base = tmp_path / "dracut"
    (base / "modules.d" / "99base").mkdir(parents=True)
    out = run_module_setup(module_dir, sandbox, "depends", "152:16", dracutbasedir=str(base))
    assert out.splitlines() == ["rootfs-block"]
    (base / "modules.d" / "80initqueue").mkdir()
    out = run_module_setup(module_dir, sandbox, "depends", "152:16", dracutbasedir=str(base))
    assert out.splitlines() == ["rootfs-block", "initqueue"]


@pytest.mark.parametrize(("hostonly_cmdline", "systemd"), [("yes", True), ("", True), ("", False)])
def test_install_puts_the_lib_where_the_scripts_source_it(module_dir: Path, sandbox: Sandbox,
                                                          hostonly_cmdline: str, systemd: bool) -> None:
    initdir = sandbox.top / "initdir"
    (initdir / "etc" / "cmdline.d").mkdir(parents=True)
    out = run_module_setup(module_dir, sandbox, "install", "152:16", moddir="/m", initdir=str(initdir),
                           hostonly_cmdline=hostonly_cmdline, systemdutildir="/usr/lib/systemd",
                           DRACUT_MODULES="base systemd rootfs-block" if systemd else "base rootfs-block")
    # a systemd initrd mounts the root with its generator's sysroot.mount, a shell-only one with the mount hook
    flavour = ["inst_script /m/aoe-generator.sh /usr/lib/systemd/system-generators/dracut-aoe-generator"] \
        if systemd else ["inst_hook mount 90 /m/aoe-mount-root.sh", "ln_r /usr/bin/true /usr/bin/loginctl",
                         "ln_r /usr/bin/true /bin/loginctl"]
    assert out.splitlines() == [
        "inst_multiple ip",
        "inst_simple /m/aoe-lib.sh /lib/aoe-lib.sh",
        "inst_hook cmdline 90 /m/parse-aoeroot.sh",
        "inst_script /m/aoeroot.sh /sbin/aoeroot",
        "inst_hook shutdown 40 /m/aoe-shutdown.sh",
        *flavour,
        "dracut_need_initqueue",
    ]
    conf = initdir / "etc" / "cmdline.d" / "95aoe.conf"
    if hostonly_cmdline:
        assert conf.read_text() == " netroot=aoe:e0.1:ext4\n"
    else:
        assert not conf.exists()
