"""boot-test's stages for the per-MAC menu's `previous` entry and for a MAC the inventory does not know."""

from __future__ import annotations

import pytest

from netbootgen.emulate.boottest import LOCALBOOT, entry_stages, guest_mac, localboot_stages, stages_for
from netbootgen.emulate.firmware import firmware_stages
from netbootgen.errors import InputError
from netbootgen.inventory import Inventory, load_inventory
from netbootgen.pxe.menu import CFG_DIR, menu_entries, pxe_filename, render_pxe

CURRENT = ("Command line: BOOT_IMAGE=boot/virtio/vmlinuz root=aoe:e0.1:ext4 rw console=ttyS0,115200 "
           "initrd=boot/virtio/initrd.img\r\n")
PREVIOUS = ("Command line: BOOT_IMAGE=boot/virtio/vmlinuz.prev root=aoe:e0.1:ext4 rw console=ttyS0,115200 "
            "initrd=boot/virtio/initrd.prev.img\r\n")


@pytest.fixture
def inv() -> Inventory:
    return load_inventory(None)  # the built-in example: node1, profile virtio


def test_previous_via_pxe_types_its_label_at_the_prompt_and_checks_its_own_files(inv: Inventory) -> None:
    m = inv.machines["node1"]
    mac = m.macs[0]
    base = stages_for("pxe", inv.exports[m.export])
    stages = entry_stages(base, menu_entries(inv, m), "previous", "pxe")
    assert [s.name for s in stages] == ["firmware", "pxelinux", "prompt", "kernel", "initrd", "aoe-discovered",
                                        "root-mounted", "init"]
    prompt, kernel = stages[2], stages[3]
    assert prompt.send == "previous\r"
    # PXELINUX's prompt as the serial console shows it (PROMPT 1 in the file PXELINUX loads for this MAC)
    assert "\nPROMPT 1\n" in render_pxe(inv)[f"{CFG_DIR}/{pxe_filename(mac)}"].text
    assert prompt.pattern.search("PXELINUX 6.04 PXE 20200816 Copyright (C) 1994-2015 H. Peter Anvin et al\r\r\nboot: ")
    assert not prompt.pattern.search("Press Ctrl-B to configure iPXE (PCI 00:02.0)...\r\n")
    assert kernel.pattern.search(PREVIOUS)
    assert not kernel.pattern.search(CURRENT)  # the default entry booting instead does not pass


def test_previous_via_uefi_moves_down_in_grubs_menu(inv: Inventory) -> None:
    m = inv.machines["node1"]
    base = firmware_stages("uefi", stages_for("pxe", inv.exports[m.export]))
    stages = entry_stages(base, menu_entries(inv, m), "previous", "pxe", "uefi")
    assert [s.name for s in stages] == [s.name for s in base]
    grub, kernel = stages[1], stages[2]
    assert grub.name == "grub" and grub.send == "v\r"  # GRUB's menu: v is down, Enter boots the highlighted entry
    assert kernel.pattern.search("Command line: BOOT_IMAGE=/boot/virtio/vmlinuz.prev root=aoe:e0.1:ext4 rw\r\n")
    assert not kernel.pattern.search("Command line: BOOT_IMAGE=/boot/virtio/vmlinuz root=aoe:e0.1:ext4 rw\r\n")


def test_current_and_direct_stages_are_unchanged(inv: Inventory) -> None:
    m = inv.machines["node1"]
    entries = menu_entries(inv, m)
    pxe = stages_for("pxe", inv.exports[m.export])
    assert entry_stages(pxe, entries, "current", "pxe") == pxe
    direct = stages_for("direct", inv.exports[m.export])
    assert entry_stages(direct, entries, "previous", "direct") == direct


def test_an_unknown_mac_expects_the_local_boot(inv: Inventory) -> None:
    m = inv.machines["node1"]
    stages = localboot_stages(stages_for("pxe", inv.exports[m.export]))
    assert [s.name for s in stages] == ["firmware", "pxelinux", "localboot", "local-disk"]
    assert LOCALBOOT.pattern.search("Booting from local disk...\r\n")
    assert stages[-1].source == "bios"
    assert stages[-1].pattern.search("enter handle_18:\n  NULL\nBooting from Hard Disk...\n")
    uefi = localboot_stages(firmware_stages("uefi", stages_for("pxe", inv.exports[m.export])), "uefi")
    assert [s.name for s in uefi] == ["firmware", "localboot", "next-boot-option"]
    # the title of grub.cfg's one entry, as GRUB announces it, then OVMF's boot manager
    assert uefi[1].pattern.search("Welcome to GRUB!\r\n  Booting `back to the firmware: its next boot option'\r\n")
    assert uefi[2].pattern.search('BdsDxe: failed to load Boot0001 "UEFI PXEv4 (MAC:525400999999)" from PciRoot')
    assert guest_mac(inv, m, "52-54-00-99-99-99") == ("52:54:00:99:99:99", True)
    assert guest_mac(inv, m, "5254.0012.3456") == ("52:54:00:12:34:56", False)
    assert guest_mac(inv, m, None) == (m.macs[0], False)
    with pytest.raises(InputError, match="not a MAC address"):
        guest_mac(inv, m, "52:54")
