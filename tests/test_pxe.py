"""PXELINUX files: names, entries, serial console, the lookup order, `pxe which`, and the written modes."""

from __future__ import annotations

import os
import stat
import textwrap
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from netbootgen.generate import render_inventory
from netbootgen.inventory import Inventory, load_inventory
from netbootgen.output import write_tree
from netbootgen.pxe.command import pxe_group
from netbootgen.pxe.lookup import config_candidates, find_config, ip_hex
from netbootgen.pxe.menu import CFG_DIR, pxe_filename, render_pxe, serial_directive
from netbootgen.pxe.tftp import install_boot_files

FLEET = """\
    [defaults]
    profile = "virtio"

    [profiles.virtio]
    nic_drivers = { virtio_net = "m" }

    [profiles.intel]
    nic_drivers = { e1000e = "y" }

    [servers.store1]
    interface = "eth0"

    [exports.root-node1]
    server = "store1"
    shelf = 0
    slot = 1
    path = "/srv/aoe/node1.img"

    [exports.root-node2]
    server = "store1"
    shelf = 0
    slot = 2
    path = "/srv/aoe/node2.img"

    [exports.shared]
    server = "store1"
    shelf = 1
    slot = 0
    path = "/srv/aoe/shared.img"
    readonly = true

    [machines.node1]
    macs = ["52:54:00:12:34:56", "52-54-00-AB-CD-EF"]
    export = "root-node1"
    serial_console = "ttyS1,57600n8"
    kernel_args = ["quiet", "loglevel=3"]

    [machines.node2]
    macs = ["5254.0000.0002"]
    export = "root-node2"
    profile = "intel"
    mtu = 9000
    aoe_interfaces = ["eth1"]
    fstype = "xfs"

    [machines.node3]
    macs = ["52:54:00:00:00:03"]
    export = "shared"
    serial_console = "ttyS5,115200"
"""

# The directives PXELINUX's core (ldlinux.c32) understands that these files use: no MENU, UI or .c32.
CORE_DIRECTIVES = {"SERIAL", "DEFAULT", "PROMPT", "TIMEOUT", "SAY", "LABEL", "LINUX", "INITRD", "APPEND",
                   "LOCALBOOT"}


@pytest.fixture
def fleet(tmp_path: Path) -> Inventory:
    path = tmp_path / "fleet.toml"
    path.write_text(textwrap.dedent(FLEET))
    return load_inventory(path)


def pxe_text(inv: Inventory, name: str) -> str:
    return render_pxe(inv)[f"{CFG_DIR}/{name}"].text


def directives(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, argument) for each line PXELINUX reads (comments and blank lines skipped)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arg = line.partition(" ")
            out.append((keyword.upper(), arg.strip()))
    return out


def labels(text: str) -> dict[str, dict[str, str]]:
    """LABEL -> its directives, as PXELINUX groups them."""
    entries: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for keyword, arg in directives(text):
        if keyword == "LABEL":
            current = entries[arg] = {}
        elif current is not None:
            current[keyword] = arg
    return entries


def globals_(text: str) -> dict[str, str]:
    """The directives before the first LABEL."""
    out: dict[str, str] = {}
    for keyword, arg in directives(text):
        if keyword == "LABEL":
            break
        out[keyword] = arg
    return out


# --- file names -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("mac", "name"), [
    ("52:54:00:12:34:56", "01-52-54-00-12-34-56"),
    ("52:54:00:AB:CD:EF", "01-52-54-00-ab-cd-ef"),
])  # fmt: skip
def test_pxe_filename(mac: str, name: str) -> None:
    assert pxe_filename(mac) == name


def test_one_file_per_mac_plus_default(fleet: Inventory) -> None:
    assert sorted(render_pxe(fleet)) == [f"{CFG_DIR}/{n}" for n in (
        "01-52-54-00-00-00-02", "01-52-54-00-00-00-03", "01-52-54-00-12-34-56", "01-52-54-00-ab-cd-ef",
        "default")]


def test_both_nics_of_a_machine_get_the_same_menu(fleet: Inventory) -> None:
    a, b = pxe_text(fleet, "01-52-54-00-12-34-56"), pxe_text(fleet, "01-52-54-00-ab-cd-ef")
    assert labels(a) == labels(b)
    assert "# machine node1, MAC 52:54:00:ab:cd:ef" in b.splitlines()


# --- entries ----------------------------------------------------------------------------------------------

def test_default_entry_boots_the_current_pair_and_the_second_the_previous_pair(fleet: Inventory) -> None:
    text = pxe_text(fleet, "01-52-54-00-12-34-56")
    assert globals_(text) == {"SERIAL": "1 57600", "DEFAULT": "current", "PROMPT": "1", "TIMEOUT": "10",
                              "SAY": "node1: booting 'current' in 1 s; "
                                     "type 'previous' for the known-good kernel and initrd"}
    append = "root=aoe:e0.1:ext4 rw console=ttyS1,57600n8 quiet loglevel=3"
    assert labels(text) == {
        "current": {"LINUX": "boot/virtio/vmlinuz", "INITRD": "boot/virtio/initrd.img", "APPEND": append},
        # its own kernel: the one that booted with initrd.prev.img, not the new vmlinuz
        "previous": {"LINUX": "boot/virtio/vmlinuz.prev", "INITRD": "boot/virtio/initrd.prev.img",
                     "APPEND": append},
    }


def test_machine_arguments(fleet: Inventory) -> None:
    node2 = labels(pxe_text(fleet, "01-52-54-00-00-00-02"))["current"]
    assert node2 == {"LINUX": "boot/intel/vmlinuz", "INITRD": "boot/intel/initrd.img",
                     "APPEND": "root=aoe:e0.2:xfs rw rd.aoe.iflist=eth1 rd.aoe.mtu=9000"}
    node3 = labels(pxe_text(fleet, "01-52-54-00-00-00-03"))["current"]
    assert node3["APPEND"] == "root=aoe:e1.0:ext4 ro console=ttyS5,115200"  # read-only export: ro


def test_entries_point_at_the_files_the_tftp_tree_holds(fleet: Inventory, tmp_path: Path) -> None:
    """The paths in LINUX/INITRD are those netbootgen.pxe.tftp installs, relative to the TFTP root."""
    tftp = tmp_path / "tftp"
    (tmp_path / "vmlinuz").write_bytes(b"kernel")
    (tmp_path / "initrd").write_bytes(b"initrd")
    install_boot_files(tftp, "virtio", tmp_path / "vmlinuz", tmp_path / "initrd")
    for entry in labels(pxe_text(fleet, "01-52-54-00-12-34-56")).values():
        assert (tftp / entry["LINUX"]).is_file()
        assert (tftp / entry["INITRD"]).is_file()


# --- the current and previous pairs in the TFTP tree -------------------------------------------------------

def install(tmp_path: Path, kernel: bytes, initrd: bytes) -> bool:
    (tmp_path / "vmlinuz").write_bytes(kernel)
    (tmp_path / "initrd").write_bytes(initrd)
    return install_boot_files(tmp_path / "tftp", "virtio", tmp_path / "vmlinuz", tmp_path / "initrd")


def boot_files(tmp_path: Path) -> dict[str, bytes]:
    d = tmp_path / "tftp" / "boot" / "virtio"
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_first_install_copies_the_current_pair_to_the_previous(tmp_path: Path) -> None:
    assert install(tmp_path, b"k1", b"i1") is False
    assert boot_files(tmp_path) == {"initrd.img": b"i1", "initrd.prev.img": b"i1", "vmlinuz": b"k1",
                                    "vmlinuz.prev": b"k1"}
    d = tmp_path / "tftp" / "boot" / "virtio"
    assert {stat.S_IMODE(p.stat().st_mode) for p in d.iterdir()} == {0o644}


def test_a_new_initrd_rotates_the_pair(tmp_path: Path) -> None:
    install(tmp_path, b"k1", b"i1")
    assert install(tmp_path, b"k1", b"i2") is True
    assert boot_files(tmp_path) == {"initrd.img": b"i2", "initrd.prev.img": b"i1", "vmlinuz": b"k1",
                                    "vmlinuz.prev": b"k1"}


def test_a_kernel_update_keeps_the_old_kernel_with_the_old_initrd(tmp_path: Path) -> None:
    """The bug this fixes: `previous` booted the new vmlinuz with the old initrd."""
    install(tmp_path, b"k1", b"i1")
    assert install(tmp_path, b"k2", b"i2") is True
    assert boot_files(tmp_path) == {"initrd.img": b"i2", "initrd.prev.img": b"i1", "vmlinuz": b"k2",
                                    "vmlinuz.prev": b"k1"}
    assert install(tmp_path, b"k3", b"i2") is True  # the kernel alone changes: the pair still moves together
    assert boot_files(tmp_path) == {"initrd.img": b"i2", "initrd.prev.img": b"i2", "vmlinuz": b"k3",
                                    "vmlinuz.prev": b"k2"}


def test_the_same_pair_again_keeps_the_previous_pair(tmp_path: Path) -> None:
    install(tmp_path, b"k1", b"i1")
    install(tmp_path, b"k2", b"i2")
    d = tmp_path / "tftp" / "boot" / "virtio"
    before = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    assert install(tmp_path, b"k2", b"i2") is False
    assert boot_files(tmp_path)["vmlinuz.prev"] == b"k1"
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir()} == before  # nothing rewritten


def test_a_tree_from_before_vmlinuz_prev_keeps_what_its_previous_entry_booted(tmp_path: Path) -> None:
    """Such a tree's `previous` booted vmlinuz with initrd.prev.img: the same bytes stay in the entry."""
    d = tmp_path / "tftp" / "boot" / "virtio"
    d.mkdir(parents=True)
    for name, data in (("vmlinuz", b"k1"), ("initrd.img", b"i1"), ("initrd.prev.img", b"i0")):
        (d / name).write_bytes(data)
    assert install(tmp_path, b"k1", b"i1") is False
    assert boot_files(tmp_path) == {"initrd.img": b"i1", "initrd.prev.img": b"i0", "vmlinuz": b"k1",
                                    "vmlinuz.prev": b"k1"}


def test_only_core_directives(fleet: Inventory) -> None:
    for f in render_pxe(fleet).values():
        assert {k for k, _ in directives(f.text)} <= CORE_DIRECTIVES
        assert ".c32" not in f.text


def test_default_file_boots_locally(fleet: Inventory) -> None:
    text = pxe_text(fleet, "default")
    assert globals_(text) == {"DEFAULT": "local", "PROMPT": "0"}
    assert labels(text) == {"local": {"LOCALBOOT": "0"}}


def test_render_does_not_depend_on_the_order_of_the_inventory(fleet: Inventory, tmp_path: Path) -> None:
    tables = textwrap.dedent(FLEET).split("\n\n")
    other = tmp_path / "other" / "fleet.toml"
    other.parent.mkdir()
    other.write_text("\n\n".join(reversed(tables)))
    assert {k: v.text for k, v in render_pxe(load_inventory(other)).items()} == \
        {k: v.text for k, v in render_pxe(fleet).items()}


# --- serial console ---------------------------------------------------------------------------------------

def test_serial_comes_before_every_other_directive(fleet: Inventory) -> None:
    for name in ("01-52-54-00-12-34-56", "01-52-54-00-ab-cd-ef"):
        assert directives(pxe_text(fleet, name))[0] == ("SERIAL", "1 57600")


def test_no_serial_without_a_console_or_for_a_port_pxelinux_cannot_drive(fleet: Inventory) -> None:
    assert "SERIAL" not in globals_(pxe_text(fleet, "01-52-54-00-00-00-02"))
    # ttyS5: PXELINUX's SERIAL takes 0-3 (COM1-COM4), other numbers are I/O port addresses.
    node3 = pxe_text(fleet, "01-52-54-00-00-00-03")
    assert "SERIAL" not in globals_(node3)
    assert "console=ttyS5,115200" in labels(node3)["current"]["APPEND"]


@pytest.mark.parametrize(("console", "directive"), [
    ("ttyS0,115200", "SERIAL 0 115200"),
    ("ttyS1,57600n8", "SERIAL 1 57600"),
    ("ttyS3,9600e7", "SERIAL 3 9600"),
    ("ttyS2", "SERIAL 2 115200"),
    ("ttyS4,115200", None),
    ("ttyS10,115200", None),
    ("ttyUSB0,115200", None),
    ("ttyAMA0", None),
    (None, None),
])  # fmt: skip
def test_serial_directive(console: str | None, directive: str | None) -> None:
    assert serial_directive(console) == directive


# --- lookup order -----------------------------------------------------------------------------------------

def test_lookup_order_of_the_syslinux_documentation() -> None:
    # The example of the PXELINUX documentation, in its order.
    uuid = "b8945908-d6a6-41a9-611d-74a6ab80b83d"
    assert config_candidates("88:99:AA:BB:CC:DD", ip="192.0.2.91", uuid=uuid) == [
        "b8945908-d6a6-41a9-611d-74a6ab80b83d", "01-88-99-aa-bb-cc-dd",
        "C000025B", "C000025", "C00002", "C0000", "C000", "C00", "C0", "C", "default"]


def test_lookup_without_uuid_or_ip() -> None:
    assert config_candidates("88-99-aa-bb-cc-dd") == ["01-88-99-aa-bb-cc-dd", "default"]


@pytest.mark.parametrize(("ip", "hexa"), [("192.0.2.91", "C000025B"), ("10.0.0.1", "0A000001"),
                                          ("255.255.255.255", "FFFFFFFF"), ("0.0.0.0", "00000000")])
def test_ip_hex(ip: str, hexa: str) -> None:
    assert ip_hex(ip) == hexa


def test_uuid_is_written_lower_case_with_dashes() -> None:
    assert config_candidates("88:99:aa:bb:cc:dd", uuid="{B8945908D6A641A9611D74A6AB80B83D}")[0] == \
        "b8945908-d6a6-41a9-611d-74a6ab80b83d"


@pytest.mark.parametrize("kwargs", [{"mac": "88:99:aa:bb:cc"}, {"mac": "zz:99:aa:bb:cc:dd"},
                                    {"mac": "88:99:aa:bb:cc:dd", "ip": "192.0.2"},
                                    {"mac": "88:99:aa:bb:cc:dd", "ip": "::1"},
                                    {"mac": "88:99:aa:bb:cc:dd", "uuid": "not-a-uuid"}])
def test_lookup_refuses_malformed_input(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        config_candidates(**kwargs)


def test_find_config_takes_the_first_existing_file() -> None:
    cands = config_candidates("88:99:aa:bb:cc:dd", ip="192.0.2.91")
    assert find_config(cands, {"default", "C0", "C00002"}) == "C00002"
    assert find_config(cands, {"default", "C0", "01-88-99-aa-bb-cc-dd"}) == "01-88-99-aa-bb-cc-dd"
    assert find_config(cands, {"default"}) == "default"
    assert find_config(cands, set()) is None


# --- `pxe which` ------------------------------------------------------------------------------------------

@click.group()
def host() -> None:
    """A stand-in for netbootgen's main group."""


host.add_command(pxe_group)


@pytest.fixture
def fleet_file(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(textwrap.dedent(FLEET))
    return path


def which(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(host, ["pxe", "which", *args])
    return res.exit_code, res.output


@pytest.mark.parametrize("mac", ["52:54:00:12:34:56", "52-54-00-12-34-56", "5254.0012.3456", "525400123456"])
def test_which_known_mac(fleet_file: Path, mac: str) -> None:
    code, out = which(mac, os.fspath(fleet_file))
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "file:   pxelinux.cfg/01-52-54-00-12-34-56 (machine node1)"
    assert lines[1].startswith("label:  current (the DEFAULT entry, booted after 1 s at the boot: prompt)")
    assert lines[2:5] == ["kernel: boot/virtio/vmlinuz", "initrd: boot/virtio/initrd.img",
                          "append: root=aoe:e0.1:ext4 rw console=ttyS1,57600n8 quiet loglevel=3"]
    assert lines[5] == "other entries: previous"


def test_which_second_nic(fleet_file: Path) -> None:
    code, out = which("52:54:00:ab:cd:ef", os.fspath(fleet_file))
    assert code == 0
    assert out.splitlines()[0] == "file:   pxelinux.cfg/01-52-54-00-ab-cd-ef (machine node1)"


def test_which_unknown_mac_gets_the_default_after_the_whole_order(fleet_file: Path) -> None:
    code, out = which("52:54:00:99:99:99", os.fspath(fleet_file), "--ip", "10.0.0.1",
                      "--uuid", "b8945908-d6a6-41a9-611d-74a6ab80b83d")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == "file:   pxelinux.cfg/default (no machine: the fallback)"
    assert lines[1] == ("        after trying pxelinux.cfg/b8945908-d6a6-41a9-611d-74a6ab80b83d, "
                        "pxelinux.cfg/01-52-54-00-99-99-99, pxelinux.cfg/0A000001, pxelinux.cfg/0A00000, "
                        "pxelinux.cfg/0A0000, pxelinux.cfg/0A000, pxelinux.cfg/0A00, pxelinux.cfg/0A0, "
                        "pxelinux.cfg/0A, pxelinux.cfg/0 (not rendered)")
    assert "boots:  LOCALBOOT 0" in lines


def test_which_uses_the_built_in_example_without_inventory() -> None:
    code, out = which("52:54:00:12:34:56")
    assert code == 0
    assert "file:   pxelinux.cfg/01-52-54-00-12-34-56 (machine node1)" in out


@pytest.mark.parametrize(("args", "shown"), [
    (["52:54:00:12:34"], "'52:54:00:12:34' is not a MAC address"),
    (["not-a-mac"], "'not-a-mac' is not a MAC address"),
    (["52:54:00:12:34:56", "--ip", "10.0.0"], "'10.0.0' is not an IPv4 address"),
    (["52:54:00:12:34:56", "--uuid", "xyz"], "'xyz' is not a UUID"),
])  # fmt: skip
def test_which_bad_parameter(args: list[str], shown: str) -> None:
    code, out = which(*args)
    assert code == 2
    assert shown in out


def test_which_bad_inventory(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[machines.x]\nmacs = ['zz']\n")
    code, out = which("52:54:00:12:34:56", os.fspath(bad))
    assert code == 2
    assert "machines.x.macs[0]" in out


# --- modes ------------------------------------------------------------------------------------------------

@pytest.fixture
def open_umask() -> Iterator[None]:
    """The writer sets modes itself: render with a umask that would make everything world-writable."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("open_umask")
def test_tftp_modes(fleet: Inventory, tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_tree(out, render_inventory(fleet))
    tftp = out / "tftp"
    paths = [tftp, *tftp.rglob("*")]
    assert len(paths) == 13  # tftp/, pxelinux.cfg/ and five files, grub/ and five GRUB files
    for p in paths:
        mode = stat.S_IMODE(p.lstat().st_mode)
        assert mode == (0o755 if p.is_dir() else 0o644), f"{p}: {mode:o}"
        assert not mode & stat.S_IWOTH
