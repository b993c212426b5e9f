"""GRUB for UEFI clients: per-MAC file names, GRUB 2.06's lookup order, the entries (same as PXELINUX's),
the fallback's `exit`, `grub-script-check` on every file, `pxe which --uefi`, and grub-mknetdir's layout."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from netbootgen.inventory import Inventory, load_inventory
from netbootgen.pxe.grub import CFG_DIR, GRUB_EFI_IMAGE, grub_filename, grub_menus, grub_word, render_grub
from netbootgen.pxe.lookup import find_config, grub_candidates
from netbootgen.pxe.menu import pxe_menus
from netbootgen.pxe.tftp import install_grub
from netbootgen.run import run
from tests.conftest import BASE_INVENTORY, edit

EXPECTED = Path(__file__).parent / "data" / "expected"


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    path = tmp_path / "inv.toml"
    path.write_text(edit(BASE_INVENTORY, ('serial_console = "ttyS0,115200"',
                                          'serial_console = "ttyS1,57600n8"\nkernel_args = ["quiet", "x=$y;z"]')))
    return load_inventory(path)


def test_grub_filename() -> None:
    assert grub_filename("52:54:00:AB:CD:EF") == "grub.cfg-01-52-54-00-ab-cd-ef"


def test_lookup_order_mac_then_ip_digits_then_grub_cfg() -> None:
    assert grub_candidates("52-54-00-12-34-56", "192.0.2.91") == [
        "grub.cfg-01-52-54-00-12-34-56", "grub.cfg-C000025B", "grub.cfg-C000025", "grub.cfg-C00002", "grub.cfg-C0000",
        "grub.cfg-C000", "grub.cfg-C00", "grub.cfg-C0", "grub.cfg-C", "grub.cfg"]
    assert grub_candidates("52:54:00:12:34:56") == ["grub.cfg-01-52-54-00-12-34-56", "grub.cfg"]
    with pytest.raises(ValueError):
        grub_candidates("nope")


def test_one_file_per_mac_plus_grub_cfg(inv: Inventory) -> None:
    assert sorted(render_grub(inv)) == [f"{CFG_DIR}/{n}" for n in (
        "grub.cfg", "grub.cfg-01-52-54-00-12-34-56", "grub.cfg-01-52-54-00-12-34-57")]


def test_known_mac_finds_its_file_unknown_falls_back(inv: Inventory) -> None:
    menus = grub_menus(inv)
    assert find_config(grub_candidates("52:54:00:12:34:56", "192.0.2.9"), menus) == "grub.cfg-01-52-54-00-12-34-56"
    assert find_config(grub_candidates("52:54:00:99:99:99", "192.0.2.9"), menus) == "grub.cfg"


def test_entries_match_pxelinux(inv: Inventory) -> None:
    grub, pxe = grub_menus(inv)["grub.cfg-01-52-54-00-12-34-56"], pxe_menus(inv)["01-52-54-00-12-34-56"]
    assert [e.id for e in grub.entries] == [e.label for e in pxe.entries] == ["current", "previous"]
    assert grub.default.id == "current"
    for g, p in zip(grub.entries, pxe.entries, strict=True):
        assert g.title == p.title
        linux, initrd = g.commands
        assert linux == f"linux /{p.kernel} " + " ".join(grub_word(w) for w in p.append.split())
        assert initrd == f"initrd /{p.initrd}"


def test_text_of_a_machine_file(inv: Inventory) -> None:
    text = render_grub(inv)[f"{CFG_DIR}/grub.cfg-01-52-54-00-12-34-56"].text
    assert "serial --unit=1 --speed=57600\nterminal_input serial console\nterminal_output serial console\n" in text
    assert "set default=current\nset timeout=1\n" in text
    assert "menuentry 'node1: current kernel and initrd' --id current {\n" in text
    # GRUB would expand $y and end the command at ';': quoted
    assert ("    linux /boot/virtio/vmlinuz root=aoe:e0.1:ext4 rw console=ttyS1,57600n8 quiet 'x=$y;z'\n"
            "    initrd /boot/virtio/initrd.img\n") in text
    assert ("    linux /boot/virtio/vmlinuz.prev root=aoe:e0.1:ext4 rw console=ttyS1,57600n8 quiet 'x=$y;z'\n"
            "    initrd /boot/virtio/initrd.prev.img\n") in text


def test_fallback_exits_to_the_firmware(inv: Inventory) -> None:
    text = render_grub(inv)[f"{CFG_DIR}/grub.cfg"].text
    assert "set default=local\nset timeout=0\n" in text
    body = text.split("--id local {", 1)[1]
    assert body.split("}", 1)[0].split() == ["exit"]  # back to the boot manager: not `fwsetup`, no reboot
    assert "fwsetup" not in text


need_grub = pytest.mark.skipif(shutil.which("grub-script-check") is None, reason="grub-script-check not found "
                               "(Debian package grub-common, with grub-efi-amd64-bin)")


@need_grub
def test_grub_script_check_accepts_every_file(inv: Inventory, tmp_path: Path) -> None:
    files = {name: f.text for name, f in render_grub(inv).items()}
    files |= {p.name: p.read_text() for p in (EXPECTED / CFG_DIR).iterdir()}
    for name, text in files.items():
        path = tmp_path / Path(name).name
        path.write_text(text)
        run(["grub-script-check", path])  # raises CommandFailed, naming the file, on a syntax error


@pytest.mark.skipif(not Path("/usr/lib/grub/x86_64-efi").is_dir(), reason="grub-efi-amd64-bin not installed")
def test_install_grub_lays_out_grub_mknetdir_tree(tmp_path: Path) -> None:
    tftp = tmp_path / "tftp"
    install_grub(tftp)
    core = tftp / GRUB_EFI_IMAGE
    assert core.read_bytes()[:2] == b"MZ"  # a PE image
    assert (tftp / "grub/x86_64-efi/normal.mod").is_file() and (tftp / "grub/x86_64-efi/tftp.mod").is_file()
    assert b"/grub" in core.read_bytes()  # the built-in prefix
    assert not list(tmp_path.glob(".grub-*"))  # the scratch folder is gone
    before = core.stat().st_mtime_ns
    install_grub(tftp)
    assert core.stat().st_mtime_ns == before  # unchanged files are not rewritten


def test_pxe_which_uefi(cli: Callable[..., Result], make_inventory: Callable[..., Path]) -> None:
    path = make_inventory()
    out = cli("pxe", "which", "52:54:00:12:34:56", path, "--uefi", expect=0).output
    assert out.startswith("file:   grub/grub.cfg-01-52-54-00-12-34-56 (machine node1)\n")
    assert "entry:  current" in out and "linux /boot/virtio/vmlinuz root=aoe:e0.1:ext4" in out
    out = cli("pxe", "which", "52:54:00:99:99:99", path, "--uefi", "--ip", "10.0.0.1", expect=0).output
    assert out.startswith("file:   grub/grub.cfg (no machine: the fallback)\n")
    assert "grub/grub.cfg-0A000001" in out and "exit" in out
    result = cli("pxe", "which", "52:54:00:12:34:56", path, "--uefi", "--uuid",
                 "b8945908-d6a6-41a9-611d-74a6ab80b83d", expect=2)
    assert "GRUB 2.06 does not look for a file named after the UUID" in result.output


def test_uefi_guest_argv_ovmf_and_grub_over_slirp(tmp_path: Path) -> None:
    from netbootgen.emulate.qemu import OVMF_CODE, QemuSpec, dgram_netdev, qemu_argv, tap_netdev

    spec = QemuSpec(Path("qemu"), netdev=dgram_netdev(tmp_path / "a", tmp_path / "b"), tftp_root=tmp_path,
                    firmware="uefi", uefi_vars=tmp_path / "vars.fd")
    argv = qemu_argv(spec)
    assert f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}" in argv
    assert f"if=pflash,format=raw,unit=1,file={tmp_path / 'vars.fd'}" in argv
    assert f"user,id=slirp0,tftp={tmp_path},bootfile={GRUB_EFI_IMAGE}" in argv
    bios = qemu_argv(QemuSpec(Path("qemu"), netdev=tap_netdev("t0"), boot_nic=True))
    assert "tap,ifname=t0,script=no,downscript=no,id=net0" in bios and not any("pflash" in a for a in bios)
    assert "virtio-net-pci,netdev=net0,bootindex=1" in bios and not any(a.startswith("user,") for a in bios)
    with pytest.raises(ValueError):
        qemu_argv(QemuSpec(Path("qemu"), firmware="uefi"))  # no variable store


def test_uefi_stages_replace_seabios_and_pxelinux() -> None:
    import re

    from netbootgen.emulate.console import Stage
    from netbootgen.emulate.firmware import firmware_stages
    from netbootgen.errors import InputError

    stages = [Stage("firmware", re.compile("x"), source="bios"), Stage("pxelinux", re.compile("y")),
              Stage("kernel", re.compile("z"))]
    assert firmware_stages("bios", stages) == stages
    uefi = firmware_stages("uefi", stages)
    assert [s.name for s in uefi] == ["firmware", "grub", "kernel"]
    assert uefi[0].source == "serial" and uefi[0].pattern.search("iPXE 1.0.0+git -- Open Source Network Boot Firmware")
    # the per-MAC file's echo line, as rendered
    assert uefi[1].pattern.search("node1: booting current in 1 s; choose previous for the known-good kernel and "
                                  "initrd")
    with pytest.raises(InputError):
        firmware_stages("coreboot", stages)
