"""The CLI's own behaviour: help, init, exit statuses."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from netbootgen.cli import main
from netbootgen.inventory import load_inventory


def test_help_lists_commands() -> None:
    res = CliRunner().invoke(main, ["--help"])
    assert res.exit_code == 0
    for cmd in ("init", "validate", "render", "build", "boot-test", "serve"):
        assert cmd in res.output


def test_init_writes_the_example_and_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "netboot.toml"
    runner = CliRunner()
    res = runner.invoke(main, ["init", str(target)])
    assert res.exit_code == 0, res.output
    text = target.read_text()
    assert text.startswith("# netbootgen inventory")
    tomllib.loads(text)
    inv = load_inventory(target)
    assert list(inv.machines) == ["node1"]
    assert inv.exports["root-node1"].shelf == 0 and inv.exports["root-node1"].slot == 1
    res = runner.invoke(main, ["init", str(target)])
    assert res.exit_code == 2 and "exists" in res.output
    assert runner.invoke(main, ["init", "--force", str(target)]).exit_code == 0


def test_validate_builtin_example() -> None:
    res = CliRunner().invoke(main, ["validate"])
    assert res.exit_code == 0
    assert "ok (1 machines" in res.output


def test_render_example_layout(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["render", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    for rel in (
        "dracut/95aoe/module-setup.sh",
        "tftp/pxelinux.cfg/01-52-54-00-12-34-56",
        "tftp/pxelinux.cfg/default",
        "kernel/virtio.config",
        "manifest.json",
    ):
        assert (tmp_path / rel).is_file(), rel
    assert list((tmp_path / "export").glob("*.service"))


def test_boot_test_rejects_unknown_machine() -> None:
    res = CliRunner().invoke(main, ["boot-test", "--machine", "nosuch"])
    assert res.exit_code == 2
    assert "nosuch" in res.output


def test_usage_error_exit_status() -> None:
    res = CliRunner().invoke(main, ["boot-test", "--via", "floppy"])
    assert res.exit_code == 2


FLEET = Path(__file__).resolve().parent / "data" / "fleet.toml"


@pytest.mark.parametrize(("args", "named"), [
    (["--mac", "52:54:00:zz:00:01"], "--mac: '52:54:00:zz:00:01' is not a MAC address"),
    # another machine's MAC is that machine's boot, not an unknown MAC's
    ([str(FLEET), "--machine", "web1", "--mac", "52-54-00-00-02-01"],
     "--mac 52:54:00:00:02:01 is machine db1's; boot it with --machine db1"),
    (["--entry", "previous", "--mac", "52:54:00:99:99:99"], "--entry previous: an entry of the machine's own menu"),
])
def test_boot_test_entry_and_mac_usage_errors(args: list[str], named: str) -> None:
    res = CliRunner().invoke(main, ["boot-test", *args])
    assert res.exit_code == 2, res.output
    assert named in res.output


def test_validate_reports_generator_level_errors(tmp_path: Path) -> None:
    """A NIC driver with no known Kconfig symbol is caught by validate, not only later by render."""
    from netbootgen.inventory import example_text

    inv = tmp_path / "inv.toml"
    inv.write_text(example_text().replace('nic_drivers = { virtio_net = "m" }', 'nic_drivers = { r8152 = "m" }'))
    res = CliRunner().invoke(main, ["validate", str(inv)])
    assert res.exit_code == 2, res.output
    assert "profiles.virtio.nic_drivers" in res.output and "r8152" in res.output


def test_boot_test_uses_a_local_kernel_tree(tmp_path: Path) -> None:
    """kernel_path names an unpacked tree; a broken one is a clear error before anything is built."""
    from netbootgen.inventory import example_text

    tree = tmp_path / "k"
    (tree / "lib/modules/6.1.0-99-amd64").mkdir(parents=True)
    inv = tmp_path / "inv.toml"
    inv.write_text(example_text().replace('kernel_version = "auto"', f'kernel_path = "{tree}"'))
    res = CliRunner().invoke(main, ["build", str(inv), "--out", str(tmp_path / "out")])
    assert res.exit_code == 1
    assert "vmlinuz-6.1.0-99-amd64 is missing" in res.output
    (tree / "boot").mkdir()
    (tree / "boot/vmlinuz-6.1.0-99-amd64").write_bytes(b"\0")
    res = CliRunner().invoke(main, ["build", str(inv), "--out", str(tmp_path / "out")])
    assert "no modules.dep; run depmod -b" in res.output


def test_build_with_a_local_kernel_tree(tmp_path: Path) -> None:
    from netbootgen.cache import cache_dir
    from netbootgen.inventory import example_text
    from netbootgen.kernel.fetch import fetch_kernel

    tree = fetch_kernel("auto", cache_dir())
    inv = tmp_path / "inv.toml"
    inv.write_text(example_text().replace('kernel_version = "auto"', f'kernel_path = "{tree.root}"'))
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["build", str(inv), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"kernel {tree.version}" in res.output
    boot = out / "tftp/boot/virtio"
    assert (boot / "vmlinuz").read_bytes() == tree.vmlinuz.read_bytes()
    assert (boot / "initrd.img").stat().st_size > 1_000_000
    assert (out / "tftp/pxelinux.0").is_file() and (out / "tftp/ldlinux.c32").is_file()
    assert (out / "tftp/pxelinux.cfg/01-52-54-00-12-34-56").is_file()
