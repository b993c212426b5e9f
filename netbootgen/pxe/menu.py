"""PXELINUX per-MAC files (pxelinux.cfg/01-aa-bb-cc-dd-ee-ff) and the fallback `default`."""

from __future__ import annotations

from dataclasses import dataclass

from netbootgen.inventory import Inventory, Machine
from netbootgen.modules.aoe import source_name
from netbootgen.render import FileTree, RenderedFile, header, render_template

CFG_DIR = "tftp/pxelinux.cfg"


def pxe_filename(mac: str) -> str:
    """'52:54:00:12:34:56' -> '01-52-54-00-12-34-56' (ARP type 1, lower-case, dashes)."""
    return "01-" + mac.lower().replace(":", "-")


def boot_dir(profile: str) -> str:
    """Where a profile's kernel and initrds live, relative to the TFTP root."""
    return f"boot/{profile}"


def kernel_args(inv: Inventory, m: Machine) -> list[str]:
    ex = inv.exports[m.export]
    args = [f"root=aoe:{ex.target}:{m.fstype}", "ro" if ex.readonly else "rw"]
    if m.aoe_interfaces:
        args.append("rd.aoe.iflist=" + ",".join(m.aoe_interfaces))
    if m.mtu is not None:
        args.append(f"rd.aoe.mtu={m.mtu}")
    if m.serial_console:
        args.append(f"console={m.serial_console}")
    args.extend(m.kernel_args)
    return args


@dataclass(frozen=True)
class Entry:
    label: str
    title: str
    kernel: str
    initrd: str
    append: str


def menu_entries(inv: Inventory, m: Machine) -> list[Entry]:
    d = boot_dir(m.profile)
    append = " ".join(kernel_args(inv, m))
    return [
        Entry("current", f"{m.name}: current initrd", f"{d}/vmlinuz", f"{d}/initrd.img", append),
        Entry("previous", f"{m.name}: previous (known-good) initrd", f"{d}/vmlinuz", f"{d}/initrd.prev.img", append),
    ]


def serial_directive(m: Machine) -> str | None:
    """'ttyS1,57600' -> 'SERIAL 1 57600'; None without a serial console."""
    if not m.serial_console or not m.serial_console.startswith("ttyS"):
        return None
    port, _, speed = m.serial_console[4:].partition(",")
    digits = "".join(c for c in speed if c.isdigit())
    return f"SERIAL {port} {digits or 115200}"


def render_pxe(inv: Inventory) -> FileTree:
    files: FileTree = {}
    hdr = header(source_name(inv))
    for m in inv.machines.values():
        for mac in m.macs:
            ctx = {
                "header": hdr,
                "machine": m.name,
                "mac": mac,
                "serial": serial_directive(m),
                "entries": menu_entries(inv, m),
            }
            files[f"{CFG_DIR}/{pxe_filename(mac)}"] = RenderedFile(render_template("pxe/machine.cfg.j2", ctx))
    files[f"{CFG_DIR}/default"] = RenderedFile(render_template("pxe/default.cfg.j2", {"header": hdr}))
    return files
