"""PXELINUX per-MAC files (pxelinux.cfg/01-aa-bb-cc-dd-ee-ff) and the fallback `default`.

Only PXELINUX's core directives are used (no menu.c32 or other modules beyond ldlinux.c32): the per-MAC file
boots its default entry after TIMEOUT, and `previous` can be typed at the boot: prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import takewhile

from netbootgen.fleet import kernel_args
from netbootgen.inventory import Inventory, Machine
from netbootgen.render import FileTree, RenderedFile, inventory_header, render_template

PXE_DIR = "pxelinux.cfg"  # relative to the TFTP root, where PXELINUX looks
CFG_DIR = f"tftp/{PXE_DIR}"  # in the rendered tree
DEFAULT_FILE = "default"
TIMEOUT = 10  # tenths of a second at the boot: prompt before the default entry boots
# Each profile's files in boot/<profile>/: the current kernel and initrd, and the previous pair, the kernel and
# initrd a build replaced, kept together (netbootgen.pxe.tftp.install_boot_files rotates them as one).
KERNEL, INITRD = "vmlinuz", "initrd.img"
PREV_KERNEL, PREV_INITRD = "vmlinuz.prev", "initrd.prev.img"


def pxe_filename(mac: str) -> str:
    """'52:54:00:12:34:56' -> '01-52-54-00-12-34-56' (ARP type 1, lower-case, dashes)."""
    return "01-" + mac.lower().replace(":", "-")


def boot_dir(profile: str) -> str:
    """Where a profile's kernel and initrds live, relative to the TFTP root."""
    return f"boot/{profile}"


@dataclass(frozen=True)
class Entry:
    """One LABEL: a Linux kernel with its initrd and command line, or LOCALBOOT (kernel None)."""

    label: str
    title: str
    kernel: str | None = None
    initrd: str | None = None
    append: str = ""
    localboot: int = 0


@dataclass(frozen=True)
class Menu:
    """One file of pxelinux.cfg/."""

    comment: str
    machine: str | None
    serial: str | None
    prompt: int
    timeout: int | None
    say: tuple[str, ...]
    entries: tuple[Entry, ...]

    @property
    def default(self) -> Entry:
        return self.entries[0]


def serial_directive(console: str | None) -> str | None:
    """'ttyS1,57600n8' -> 'SERIAL 1 57600'. None without a console, or for one PXELINUX cannot drive: its
    SERIAL port is 0-3 for COM1-COM4 (ttyS0-ttyS3) and any other number is an I/O port address."""
    if not console or not console.startswith("ttyS"):
        return None
    port, _, speed = console[4:].partition(",")
    if port not in ("0", "1", "2", "3"):
        return None
    baud = "".join(takewhile(str.isdigit, speed))  # '57600n8' -> '57600'
    return f"SERIAL {port} {baud or 115200}"


def menu_entries(inv: Inventory, m: Machine) -> tuple[Entry, Entry]:
    """The current kernel and initrd with the machine's arguments, then the previous (known-good) pair: the
    kernel and initrd that booted together before the last build replaced them."""
    d = boot_dir(m.profile)
    append = " ".join(kernel_args(inv, m))
    return (
        Entry("current", f"{m.name}: current kernel and initrd", f"{d}/{KERNEL}", f"{d}/{INITRD}", append),
        Entry("previous", f"{m.name}: previous (known-good) kernel and initrd", f"{d}/{PREV_KERNEL}",
              f"{d}/{PREV_INITRD}", append),
    )


def machine_menu(m: Machine, mac: str, entries: tuple[Entry, Entry]) -> Menu:
    current, previous = entries
    say = (f"{m.name}: booting {current.label!r} in {TIMEOUT / 10:g} s; "
           f"type {previous.label!r} for the known-good kernel and initrd")
    return Menu(comment=f"machine {m.name}, MAC {mac}", machine=m.name,
                serial=serial_directive(m.serial_console), prompt=1, timeout=TIMEOUT, say=(say,),
                entries=entries)


def default_menu() -> Menu:
    return Menu(comment="Fallback for MACs the inventory does not know: boot from the local disk.",
                machine=None, serial=None, prompt=0, timeout=None, say=(),
                entries=(Entry("local", "the next BIOS boot device", localboot=0),))


def pxe_menus(inv: Inventory) -> dict[str, Menu]:
    """Every file netbootgen renders into pxelinux.cfg/, by name: one per MAC of every machine, and
    `default`."""
    menus = {}
    for m in inv.machines.values():
        entries = menu_entries(inv, m)
        for mac in m.macs:
            menus[pxe_filename(mac)] = machine_menu(m, mac, entries)
    menus[DEFAULT_FILE] = default_menu()
    return menus


def render_menu(menu: Menu, hdr: str) -> str:
    return render_template("pxe/menu.cfg.j2", {"header": hdr, "menu": menu})


def render_pxe(inv: Inventory) -> FileTree:
    hdr = inventory_header(inv)
    return {f"{CFG_DIR}/{name}": RenderedFile(render_menu(m, hdr)) for name, m in pxe_menus(inv).items()}
