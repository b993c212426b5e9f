"""GRUB per-MAC files for UEFI clients (grub/grub.cfg-01-aa-bb-cc-dd-ee-ff) and the fallback grub/grub.cfg.

The TFTP tree holds GRUB as Debian's `grub-mknetdir --subdir=grub` lays it out: the image the DHCP server
names, grub/x86_64-efi/core.efi, has the prefix /grub built in. On a network boot GRUB 2.06's `normal`
(grub_net_search_config_file, net/net.c) tries, in $prefix/ and stopping at the first file the TFTP server
has:
  1. grub.cfg-01- and the MAC, lower-case hex with dashes (grub.cfg-01-88-99-aa-bb-cc-dd);
  2. grub.cfg- and the IPv4 address in upper-case hex (grub.cfg-C000025B), then shortened by one digit at a
     time (grub.cfg-C000025 ... grub.cfg-C);
  3. grub.cfg.
(The client UUID, which PXELINUX tries first, is not in 2.06.) The subdirectory is `grub`, not `boot/grub`:
boot/<profile>/ holds each profile's kernel, and a profile may be called `grub`.

Each per-MAC file has the PXELINUX file's entries (`current`, `previous`); the fallback's one entry runs
`exit`, which hands control back to the firmware's boot manager with success, so that it boots its next
boot option (the local disk) instead of stopping in its setup menu.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from netbootgen.inventory import Inventory, Machine
from netbootgen.pxe.menu import TIMEOUT, Entry, menu_entries
from netbootgen.render import FileTree, RenderedFile, inventory_header, render_template

GRUB_DIR = "grub"  # relative to the TFTP root: grub-mknetdir --subdir, GRUB's $prefix
GRUB_PLATFORM = "x86_64-efi"
GRUB_EFI_IMAGE = f"{GRUB_DIR}/{GRUB_PLATFORM}/core.efi"  # what the DHCP server gives x86-64 UEFI clients
GRUB_CFG = "grub.cfg"
CFG_DIR = f"tftp/{GRUB_DIR}"  # in the rendered tree
# Characters that GRUB's script lexer reads literally outside quotes.
GRUB_PLAIN_RE = re.compile(r"^[A-Za-z0-9_./:=,+@%^-]+\Z")


def grub_filename(mac: str) -> str:
    """'52:54:00:12:34:56' -> 'grub.cfg-01-52-54-00-12-34-56'."""
    return f"{GRUB_CFG}-01-" + mac.lower().replace(":", "-")


def grub_word(word: str) -> str:
    """One GRUB script word: as it is when the lexer reads it literally, else in single quotes (the inventory
    admits no quote or backslash in kernel arguments)."""
    if GRUB_PLAIN_RE.match(word):
        return word
    if "'" in word:
        raise ValueError(f"{word!r} cannot be quoted for GRUB")
    return f"'{word}'"


def serial_commands(console: str | None) -> tuple[str, ...]:
    """'ttyS1,57600n8' -> GRUB's serial set-up for COM2 at 57600 baud, on the serial line and the screen; none
    for other consoles (the kernel still gets console=)."""
    if not console or not console.startswith("ttyS"):
        return ()
    port, _, speed = console[4:].partition(",")
    if port not in ("0", "1", "2", "3"):  # COM1-COM4, as for PXELINUX's SERIAL
        return ()
    baud = re.match(r"[0-9]*", speed)
    return (f"serial --unit={port} --speed={baud.group() if baud and baud.group() else 115200}",
            "terminal_input serial console", "terminal_output serial console")


@dataclass(frozen=True)
class GrubEntry:
    id: str
    title: str
    commands: tuple[str, ...]


@dataclass(frozen=True)
class GrubMenu:
    comment: str
    machine: str | None
    serial: tuple[str, ...]
    timeout: int
    say: tuple[str, ...]
    entries: tuple[GrubEntry, ...]

    @property
    def default(self) -> GrubEntry:
        return self.entries[0]


def grub_entry(e: Entry) -> GrubEntry:
    """A PXELINUX entry as a GRUB menuentry: paths from the TFTP root, which is GRUB's $root."""
    if e.kernel is None:
        return GrubEntry(e.label, e.title, ("exit",))
    linux = " ".join(grub_word(w) for w in [f"/{e.kernel}", *e.append.split()])
    return GrubEntry(e.label, e.title, (f"linux {linux}", f"initrd {grub_word(f'/{e.initrd}')}"))


def machine_grub_menu(inv: Inventory, m: Machine, mac: str) -> GrubMenu:
    current, previous = menu_entries(inv, m)
    seconds = max(1, TIMEOUT // 10)
    say = (f"{m.name}: booting {current.label} in {seconds} s; "
           f"choose {previous.label} for the known-good kernel and initrd")
    return GrubMenu(comment=f"machine {m.name}, MAC {mac}", machine=m.name,
                    serial=serial_commands(m.serial_console), timeout=seconds, say=(say,),
                    entries=(grub_entry(current), grub_entry(previous)))


def default_grub_menu() -> GrubMenu:
    return GrubMenu(comment="Fallback for MACs the inventory does not know: back to the firmware, which boots "
                            "its next boot option.",
                    machine=None, serial=(), timeout=0, say=(),
                    entries=(GrubEntry("local", "back to the firmware: its next boot option", ("exit",)),))


def grub_menus(inv: Inventory) -> dict[str, GrubMenu]:
    """Every file netbootgen renders into grub/, by name: one per MAC of every machine, and grub.cfg."""
    menus = {}
    for m in inv.machines.values():
        for mac in m.macs:
            menus[grub_filename(mac)] = machine_grub_menu(inv, m, mac)
    menus[GRUB_CFG] = default_grub_menu()
    return menus


def render_grub(inv: Inventory) -> FileTree:
    hdr = inventory_header(inv)
    return {f"{CFG_DIR}/{name}": RenderedFile(render_template("pxe/grub.cfg.j2", {"header": hdr, "menu": menu}))
            for name, menu in grub_menus(inv).items()}

