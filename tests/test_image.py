"""The Debian root image recipe (packages, fstab, units, check script) without mmdebstrap; ext4/xfs images made
from a small tree and read back without mounting; the image cache; the host's view of a copy-on-write disk."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from netbootgen.aoe.cow import CowOverlay
from netbootgen.emulate.realroot import RealRoot, merged_view, with_check
from netbootgen.errors import InputError
from netbootgen.image.build import build_image, cache_name, image_key
from netbootgen.image.fs import make_fs_image, parse_size, write_xfs_proto
from netbootgen.image.inspect import fs_state, read_file
from netbootgen.image.recipe import (
    CHECK_ARG,
    CHECK_DATA_SIZE,
    CHECK_SCRIPT,
    CHECK_UNIT,
    SERIAL_GETTY_DROPIN,
    debian_recipe,
    packages,
    render_fstab,
)
from netbootgen.inventory import Inventory, load_inventory
from netbootgen.modules.dracut_module import render_module

needs = pytest.mark.skipif


def example(tmp_path: Path, **machine: str) -> Inventory:
    """The built-in example, its machine's keys set as given."""
    text = (Path(__file__).parent.parent / "netbootgen/data/example.toml").read_text()
    if "serial_console" in machine:
        text = text.replace('serial_console = "ttyS0,115200"\n', "")
    extra = "".join(f'{k} = "{v}"\n' for k, v in machine.items())
    inv = tmp_path / "inv.toml"
    inv.write_text(text.replace("kernel_args = []\n", "kernel_args = []\n" + extra))
    return load_inventory(inv)


def test_recipe_ext4(tmp_path: Path) -> None:
    inv = example(tmp_path)
    m = inv.machine(None)
    r = debian_recipe(inv, m, render_module(inv))
    assert r.suite == "bookworm" and r.variant == "minbase"
    assert list(r.packages) == ["dracut-core", "e2fsprogs", "iproute2", "kmod", "systemd-sysv", "udev"]
    # the AoE root with _netdev: systemd keeps the network until it is unmounted
    assert r.files["etc/fstab"].text.splitlines()[1] == "/dev/etherd/e0.1\t/\text4\tdefaults,_netdev\t0\t0"
    assert r.files["etc/hostname"].text == "node1\n"
    # the rendered 95aoe, every file, executable, where the machine's own dracut finds it
    module = {k.removeprefix("usr/lib/dracut/modules.d/"): f for k, f in r.files.items() if "dracut" in k}
    assert sorted(module) == sorted(k.removeprefix("dracut/") for k in render_module(inv))
    assert all(f.mode == 0o755 for f in module.values()) and "95aoe/module-setup.sh" in module
    links = dict(r.symlinks)
    assert links["etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service"] == \
        "/lib/systemd/system/serial-getty@.service"
    # no agetty on the serial console in a check boot (its hangup discarded the check unit's queued lines)
    dropin = r.files["etc/systemd/system/serial-getty@.service.d/netbootgen-check.conf"]
    assert dropin.text == SERIAL_GETTY_DROPIN and f"ConditionKernelCommandLine=!{CHECK_ARG}" in dropin.text
    assert links["etc/systemd/system/multi-user.target.wants/netbootgen-check.service"] == \
        "/etc/systemd/system/netbootgen-check.service"
    assert links["etc/systemd/system/systemd-firstboot.service"] == "/dev/null"
    # nothing in the recipe configures the network: the NIC stays as the initrd left it
    assert not any(p in r.packages for p in ("ifupdown", "network-manager", "systemd-networkd", "netplan.io"))
    assert not any("network" in name for name in r.files)


def test_recipe_follows_the_machine(tmp_path: Path) -> None:
    inv = example(tmp_path, fstype="xfs", serial_console="")
    m = inv.machine(None)
    r = debian_recipe(inv, m, render_module(inv))
    assert "xfsprogs" in r.packages and "e2fsprogs" not in r.packages
    assert "\txfs\tdefaults,_netdev\t" in render_fstab(inv, m)
    assert not any("serial-getty" in name for name, _ in r.symlinks)  # no serial console, no serial getty
    assert not any("serial-getty" in name for name in r.files)
    other = debian_recipe(inv, replace(m, name="node9"), render_module(inv))
    assert other.describe() != r.describe()  # the cache key follows the recipe


def test_recipe_refuses_a_file_system_it_cannot_make(tmp_path: Path) -> None:
    inv = example(tmp_path, fstype="btrfs")
    with pytest.raises(InputError, match=r"machines\.node1\.fstype: 'btrfs' .*ext4, xfs"):
        packages(inv.machine(None))


def test_check_unit_and_script_lint(tmp_path: Path) -> None:
    unit = tmp_path / "netbootgen-check.service"
    unit.write_text(CHECK_UNIT.replace("/usr/lib/netbootgen/check", os.fspath(tmp_path / "check")))
    (tmp_path / "check").write_text(CHECK_SCRIPT)
    assert f"ConditionKernelCommandLine={CHECK_ARG}" in CHECK_UNIT
    assert "ExecStartPost=systemctl --no-block poweroff" in CHECK_UNIT  # through systemd, never -f
    subprocess.run(["systemd-analyze", "verify", os.fspath(unit)], check=True, capture_output=True)
    subprocess.run(["shellcheck", "-s", "sh", os.fspath(tmp_path / "check")], check=True)


def test_serial_getty_dropin_verifies(tmp_path: Path) -> None:
    """The drop-in on Debian's own serial-getty@.service: systemd-analyze reads it without a word (an unknown key
    or section would be reported on stderr)."""
    (tmp_path / "serial-getty@.service.d").mkdir()
    (tmp_path / "serial-getty@.service.d/netbootgen-check.conf").write_text(SERIAL_GETTY_DROPIN)
    shutil.copy("/lib/systemd/system/serial-getty@.service", tmp_path)
    proc = subprocess.run(["systemd-analyze", "verify", os.fspath(tmp_path / "serial-getty@ttyS0.service")],
                          capture_output=True, text=True, env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_check_data_is_what_the_guest_writes() -> None:
    from netbootgen.image.recipe import check_data

    out = subprocess.run(["sh", "-c", f'yes "netbootgen check boot 3" 2>/dev/null | head -c {CHECK_DATA_SIZE}'],
                         capture_output=True, check=True).stdout
    assert out == check_data(3) and len(out) == CHECK_DATA_SIZE and check_data(3) != check_data(4)


def test_with_check_adds_the_argument_once(tmp_path: Path) -> None:
    inv = example(tmp_path)
    once = with_check(inv, inv.machine(None))
    assert once.machine(None).kernel_args == (CHECK_ARG,)
    assert with_check(once, once.machine(None)) is once
    assert inv.machine(None).kernel_args == ()


@pytest.mark.parametrize(("text", "size"), [("1G", 1 << 30), ("1536M", 1536 << 20), ("2GiB", 2 << 30), ("4096", 4096)])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "1X", "-1G", "big"])
def test_parse_size_errors(text: str) -> None:
    with pytest.raises(InputError, match="--size"):
        parse_size(text)


def small_tree(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc/hostname").write_text("node1\n")
    (root / "big").write_bytes(bytes(range(256)) * 4096 * 3)  # 3 MiB: several extents' worth
    (root / "tmp").mkdir()
    (root / "tmp").chmod(0o1777)
    (root / "link").symlink_to("etc/hostname")
    return root


@pytest.mark.parametrize("fstype", ["ext4", "xfs"])
def test_fs_image_made_and_read_back_without_mounting(tmp_path: Path, fstype: str) -> None:
    tree = small_tree(tmp_path / "tree")
    image = tmp_path / "root.img"
    make_fs_image(tree, fstype, 320 << 20, image)
    # sparse: the files, the metadata and (xfs) the stamped log
    assert image.stat().st_size == 320 << 20 and image.stat().st_blocks * 512 < 96 << 20
    assert read_file(image, fstype, "/etc/hostname") == b"node1\n"
    assert read_file(image, fstype, "/big") == (tree / "big").read_bytes()
    assert read_file(image, fstype, "/missing") is None
    assert read_file(image, fstype, "/tmp") is None  # a directory is not a file
    state = fs_state(image, fstype)
    assert state.clean, state.detail


def test_xfs_keeps_the_sticky_bit(tmp_path: Path) -> None:
    tree = small_tree(tmp_path / "tree")
    image = tmp_path / "root.img"
    make_fs_image(tree, "xfs", 300 << 20, image)
    out = subprocess.run(["xfs_db", "-r", "-c", "path /tmp", "-c", "print core.mode", image],
                         capture_output=True, text=True, check=True).stdout
    assert "core.mode = 041777" in out


def test_xfs_prototype_refuses_blank_names(tmp_path: Path) -> None:
    tree = small_tree(tmp_path / "tree")
    (tree / "a name").write_text("x")
    with pytest.raises(InputError, match="white space"):
        write_xfs_proto(tree, tmp_path / "proto")


def test_ext4_state_catches_a_journal_left_open(tmp_path: Path) -> None:
    """The check must be able to fail: an image whose superblock still says needs_recovery is not clean."""
    image = tmp_path / "root.img"
    make_fs_image(small_tree(tmp_path / "tree"), "ext4", 64 << 20, image)
    subprocess.run(["debugfs", "-w", "-R", "feature needs_recovery", image], check=True, capture_output=True)
    state = fs_state(image, "ext4")
    assert not state.clean and "needs_recovery" in state.detail


def test_merged_view_lays_the_overlay_over_the_base(tmp_path: Path) -> None:
    base = tmp_path / "base.img"
    base.write_bytes(b"B" * 512 * 64)
    overlay = tmp_path / "root.cow"
    fd = os.open(base, os.O_RDONLY)
    try:
        cow = CowOverlay(overlay, fd, 0, 64)
        cow.write_from(b"O" * 1024, 10)  # sectors 10 and 11
        cow.close()
    finally:
        os.close(fd)
    merged = merged_view(RealRoot(base, overlay, "ext4", "test"), tmp_path / "merged.img")
    data = merged.read_bytes()
    assert data == b"B" * 5120 + b"O" * 1024 + b"B" * (512 * 52)
    assert base.read_bytes() == b"B" * 512 * 64  # the base is never written


def test_too_small_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    inv = example(tmp_path, fstype="xfs")
    with pytest.raises(InputError, match="--size: an xfs image needs at least 300M, not 200M"):
        build_image(inv, None, tmp_path / "cache", size=200 << 20)
    assert not (tmp_path / "cache").exists()


@needs(shutil.which("mmdebstrap") is None, reason="mmdebstrap not found")
def test_cached_image_is_reused_without_mmdebstrap(tmp_path: Path) -> None:
    inv = example(tmp_path)
    m = inv.machine(None)
    recipe = debian_recipe(inv, m, render_module(inv))
    path = tmp_path / "cache" / "image" / cache_name(recipe, image_key(recipe, 1 << 30))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"image")
    result = build_image(inv, None, tmp_path / "cache")
    assert result.cached and result.path == path and result.fstype == "ext4"
    # another size is another image
    assert image_key(recipe, 2 << 30) != image_key(recipe, 1 << 30)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["image", "build", "--size", "1X"], "--size: '1X' is not a size"),
        (["image", "build", "--machine", "nope"], "no machine named 'nope'"),
        (["boot-test", "--persist"], "--persist goes with --root-image"),
    ],
)
def test_cli_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    from click.testing import CliRunner

    from netbootgen.cli import main

    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    assert message in res.output


def test_image_build_help() -> None:
    from click.testing import CliRunner

    from netbootgen.cli import main

    res = CliRunner().invoke(main, ["image", "build", "--help"])
    assert res.exit_code == 0
    for word in ("--machine", "--out", "--size", "mmdebstrap", "_netdev", "serial getty"):
        assert word in res.output
