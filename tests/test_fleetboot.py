"""Several machines at once (emulate/fleetboot.py): the proofs, which catch a guest that got another machine's
export or PXELINUX file, and the options. The boot itself: integration/qemu/test_fleet.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from netbootgen.cli import main
from netbootgen.emulate.boottest import BootTestOptions
from netbootgen.emulate.fleetboot import (
    Evidence,
    FleetOptions,
    check_fleet_options,
    console_cmdline,
    console_identity,
    export_args,
    marker_machine,
    prove,
    pxe_cmdline,
    pxe_entry,
    select_machines,
)
from netbootgen.emulate.rootfs import CMDLINE_BEGIN, CMDLINE_END, IDENTITY_MARKER, read_marker
from netbootgen.errors import InputError
from netbootgen.inventory import load_inventory

DATA = Path(__file__).parent / "data"
FLEET = DATA / "fleet.toml"
KIOSK1_FILE = DATA / "expected/tftp/pxelinux.cfg/01-52-54-00-00-03-01"
KIOSK1_CMDLINE = "BOOT_IMAGE=boot/virtio/vmlinuz root=aoe:e1.0:ext4 ro console=ttyS0,115200 panic=30 " \
    "initrd=boot/virtio/initrd.img"


def console(machine: str, root: str, cmdline: str) -> str:
    """A guest's console as the busybox root's init prints it (serial lines end in CR LF)."""
    lines = ["[    2.1] random: crng init done", f"NETBOOTGEN-INIT-OK pid 1 root=root=aoe:{root}",
             f"{IDENTITY_MARKER} machine={machine} root={root}", CMDLINE_BEGIN, cmdline + " ", CMDLINE_END,
             "netbootgen: wrote /netbootgen-boot-test, powering off"]
    return "\r\n".join(lines) + "\r\n"


def test_the_current_entry_of_a_rendered_pxelinux_file() -> None:
    entry = pxe_entry(KIOSK1_FILE.read_text())
    assert entry == {"LINUX": "boot/virtio/vmlinuz", "INITRD": "boot/virtio/initrd.img",
                     "APPEND": "root=aoe:e1.0:ext4 ro console=ttyS0,115200 panic=30"}
    assert pxe_cmdline(entry) == KIOSK1_CMDLINE
    previous = pxe_entry(KIOSK1_FILE.read_text(), "previous")
    assert previous["INITRD"] == "boot/virtio/initrd.prev.img" and pxe_entry("", "current") == {}


def test_console_parsing() -> None:
    text = console("kiosk1", "base-ro", KIOSK1_CMDLINE)
    assert console_identity(text) == ("kiosk1", "base-ro")
    assert console_cmdline(text) == KIOSK1_CMDLINE
    assert console_identity("NETBOOTGEN-INIT-OK") is None and console_cmdline(CMDLINE_BEGIN) is None
    assert marker_machine("boot-test 1234\nmachine web1\n") == "web1"
    assert marker_machine("boot-test 1234\nmachine \n") is None and marker_machine(None) is None


def evidence(machine: str, export: str, readonly: bool, shown: str) -> Evidence:
    return Evidence(machine, export, readonly, shown, f"BOOT_IMAGE=k root=x {machine}", "the current entry")


def test_proofs_pass_when_each_guest_got_its_own() -> None:
    images = {"root-web1": "web1", "root-db1": "db1"}
    for machine, export, ro in (("web1", "root-web1", False), ("db1", "root-db1", False),
                                ("kiosk1", "base-ro", True), ("kiosk2", "base-ro", True)):
        ev = evidence(machine, export, ro, console(machine, export, f"BOOT_IMAGE=k root=x {machine}"))
        assert prove(ev, images) == [], machine


def test_swapped_exports_are_caught() -> None:
    """web1 and db1 each booted the other's export: the images hold the other's name, the consoles the other's
    root tag; each proof fails."""
    images = {"root-web1": "db1", "root-db1": "web1"}
    web1 = evidence("web1", "root-web1", False, console("web1", "root-db1", "BOOT_IMAGE=k root=x web1"))
    problems = prove(web1, images)
    assert "it mounted the root image of export 'root-db1', not 'root-web1'" in problems
    assert "the image of export 'root-web1' holds 'db1' machine name, not 'web1'" in problems
    assert "its name is in the image of export root-db1" in problems
    # a kiosk has no write to show: its console is its proof
    kiosk = evidence("kiosk2", "base-ro", True, console("kiosk2", "root-web1", "BOOT_IMAGE=k root=x kiosk2"))
    assert prove(kiosk, images) == ["it mounted the root image of export 'root-web1', not 'base-ro'"]


def test_another_machines_pxelinux_file_or_console_is_caught() -> None:
    images = {"root-web1": "web1"}
    wrong_file = evidence("web1", "root-web1", False, console("web1", "root-web1", "BOOT_IMAGE=k root=x db1"))
    assert prove(wrong_file, images) == [
        "/proc/cmdline 'BOOT_IMAGE=k root=x db1' is not the current entry's 'BOOT_IMAGE=k root=x web1'"]
    wrong_guest = evidence("web1", "root-web1", False, console("db1", "root-web1", "BOOT_IMAGE=k root=x web1"))
    assert prove(wrong_guest, images) == ["the guest says it is machine 'db1', not 'web1'"]
    silent = evidence("web1", "root-web1", False, "NETBOOTGEN-INIT-OK\r\n")
    assert prove(silent, {"root-web1": None}) == [
        f"no {IDENTITY_MARKER} line on the console", "the image of export 'root-web1' holds 'no' machine name, "
        "not 'web1'", "no /proc/cmdline between the console markers"]


def test_one_target_serves_each_export_to_its_machines() -> None:
    inv = load_inventory(FLEET)
    args = export_args(inv, inv.exports["base-ro"], Path("/w/base-ro.img"))
    assert args == ["--export", "1.0=/w/base-ro.img,ro,offset=2048,length=4194304,"
                    "allow=52:54:00:00:03:01+52:54:00:00:03:02"]
    assert export_args(inv, inv.exports["root-web1"], Path("/w/r.img")) == [
        "--export", "0.1=/w/r.img,allow=52:54:00:00:01:01+52:54:00:00:01:02"]


def test_machine_selection() -> None:
    inv = load_inventory(FLEET)
    with pytest.raises(InputError, match="machines.kiosk2.serial_console \\(none\\)"):
        select_machines(inv, ())
    with pytest.raises(InputError, match="machines.web1.serial_console \\(ttyS1,57600\\) must be ttyS0"):
        select_machines(inv, ("kiosk1", "web1"))
    with pytest.raises(InputError, match="no machine named 'nope'"):
        select_machines(inv, ("kiosk1", "nope"))
    assert [m.name for m in select_machines(inv, ("kiosk1", "kiosk1"))] == ["kiosk1"]


@pytest.mark.parametrize(
    ("boot", "message"),
    [(BootTestOptions(network="netns"), "--network is for one machine"),
     (BootTestOptions(root="debian"), "--root is for one machine"),
     (BootTestOptions(firmware="uefi"), "--firmware is for one machine"),
     (BootTestOptions(entry="previous"), "--entry is for one machine"),
     (BootTestOptions(mac="52:54:00:99:99:99"), "--mac is for one machine"),
     (BootTestOptions(via="usb"), "--via must be pxe or direct")],
)
def test_fleet_options(boot: BootTestOptions, message: str) -> None:
    with pytest.raises(InputError, match=message):
        check_fleet_options(FleetOptions(("a", "b"), 2, boot))
    with pytest.raises(InputError, match="--jobs must be at least 1"):
        check_fleet_options(FleetOptions(("a", "b"), 0))


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--all", "--machine", "kiosk1"], "--all boots every machine"),
     (["--machine", "kiosk1", "--machine", "web1"], "machines.web1.serial_console"),
     (["--all", "--network", "netns"], "--network is for one machine"),
     (["--all", "--jobs", "0"], "Invalid value for '-j' / '--jobs'")],
)
def test_cli_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["boot-test", str(FLEET), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_root_image_tagged_and_placed_in_the_export_window(tmp_path: Path) -> None:
    """The image of an export with a window (base-ro: offset 2048, length 4194304 sectors): a sparse file whose
    file system starts at the offset and holds the export's tag, which the guest prints."""
    from netbootgen.emulate.rootfs import ROOT_TAG_FILE, make_rootfs
    from netbootgen.run import need_binary, run

    image = make_rootfs(tmp_path / "base-ro.img", tag="base-ro", offset=2048, length=4194304)
    assert image.stat().st_size == (2048 + 4194304) * 512
    assert image.stat().st_blocks * 512 < 80 << 20  # sparse
    cat = run([need_binary("debugfs"), "-R", f"cat /{ROOT_TAG_FILE}", f"{image}?offset={2048 * 512}"],
              capture=True)
    assert cat.stdout == "base-ro\n"
    assert read_marker(image, 2048) is None  # nothing written yet


def fleet_machine(name: str, started: float) -> dict[str, object]:
    stages = [{"name": s, "t": t, "ok": True} for s, t in (("firmware", 0.3), ("kernel", 20.0), ("init", 35.0))]
    return {"ok": True, "machine": name, "via": "pxe", "seconds": 36.0, "started": started, "stages": stages}


def test_timeline_of_a_fleet_report_one_row_per_machine_from_its_start(tmp_path: Path) -> None:
    """`netbootgen timeline FLEET.json`: a row per machine, the bars of a guest that waited for a job from the time
    it started (--jobs 1: node2 after node1)."""
    import json
    import xml.etree.ElementTree as ET

    report = tmp_path / "fleet.json"
    report.write_text(json.dumps({"ok": True, "fleet": True, "jobs": 1, "via": "pxe", "seconds": 72.0,
                                  "machines": [fleet_machine("node1", 0.0), fleet_machine("node2", 36.0)]}))
    out = tmp_path / "fleet.svg"
    result = CliRunner().invoke(main, ["timeline", str(report), "-o", str(out)])
    assert result.exit_code == 0 and "(2 runs)" in result.output, result.output
    root = ET.fromstring(out.read_text())
    rows = [[r for r in g.iter("{http://www.w3.org/2000/svg}rect")] for g in root.iter("{http://www.w3.org/2000/svg}g")
            if g.get("class") == "run"]
    assert [float(r[0].get("data-start", "")) for r in rows] == [0.0, 36.0]
    assert [float(r[-1].get("data-end", "")) for r in rows] == [35.0, 71.0]
    assert "node1 (pxe)" in out.read_text() and "node2 (pxe)" in out.read_text()
    report.write_text(json.dumps({"fleet": True, "machines": [{"stages": "x"}]}))
    result = CliRunner().invoke(main, ["timeline", str(report), "-o", str(out)])
    assert result.exit_code == 2 and f"{report}: machines[0]: 'stages' must be a list" in result.output
