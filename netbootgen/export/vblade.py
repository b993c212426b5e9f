"""systemd units running Debian's vblade for each export, with the export's machines as the MAC allow-list.

Deny by default: vblade serves every client when its -m list is empty (it also skips, with only a warning, an
-m entry it cannot parse), so an export that no machine uses gets no unit at all.

vblade keeps the -m list in a fixed table of 32 entries (aoe.c Nmasks) and does not check the bound: more
MACs overwrite its other variables (200 MACs turn the offset into garbage). An export with more MACs (a
shared read-only image) is served by several vblade processes on the same shelf.slot, each allowing at most
32 of them: each process answers only its own MACs, so every client sees one target.

vblade serves one interface. A server with several (`interfaces = ["eth0", "eth1"]`, multipath) gets one unit
per interface and export, netbootgen-aoe-NAME@IFACE.service: each vblade answers from its own interface's MAC,
which is how the Linux initiator tells a target's paths apart, and all of them read and write the same file or
device (through the page cache, or O_DIRECT with `direct`), so every path sees every write.

vblade has no copy-on-write: an export with `cow` gets no unit (serve it with `netbootgen serve INVENTORY
--server NAME`, which serves the server's exports, cow or not).
"""

from __future__ import annotations

from typing import Any

from netbootgen.export.systemd import device_unit, unit_quote
from netbootgen.fleet import allowed_macs
from netbootgen.inventory import Export, Inventory, Server
from netbootgen.render import FileTree, RenderedFile, inventory_header, render_template

VBLADE = "/usr/sbin/vblade"
MAX_MACS = 32
# Hidden by ProtectHome=yes / PrivateTmp=yes: an export stored there needs them relaxed.
HOME_DIRS = ("/home/", "/root/", "/run/user/")
TMP_DIRS = ("/tmp/", "/var/tmp/")


def unit_name(ex: Export, part: int = 1, interface: str | None = None) -> str:
    """netbootgen-aoe-NAME.service; the further vblade processes of an export with more than MAX_MACS MACs
    are netbootgen-aoe2-NAME.service, netbootgen-aoe3-NAME.service, ... (never one of another export's: those
    all begin 'netbootgen-aoe-'). On a server with several interfaces every unit names its interface as the
    instance: netbootgen-aoe-NAME@IFACE.service, netbootgen-aoe2-NAME@IFACE.service, ... (a unit file of that
    exact name; no template; neither export nor interface names hold '@'). No ':' anywhere: `systemd-analyze
    verify` reads FILE:NAME as a unit with an alias and fails."""
    number = str(part) if part > 1 else ""
    return f"netbootgen-aoe{number}-{ex.name}{f'@{interface}' if interface else ''}.service"


def mac_parts(macs: list[str]) -> list[list[str]]:
    """`macs` in runs of at most MAX_MACS, one per vblade process."""
    return [macs[i : i + MAX_MACS] for i in range(0, len(macs), MAX_MACS)]


def vblade_argv(ex: Export, interface: str, macs: list[str]) -> list[str]:
    """vblade's argv. MACs go to -m as 'aa:bb:cc:dd:ee:ff' joined by ',' (vblade's parseether reads two hex
    digits and an optional ':'; dashes would be misread). -o and -l are in 512-byte sectors."""
    if not 0 < len(macs) <= MAX_MACS:
        raise ValueError(f"vblade needs 1 to {MAX_MACS} MACs for -m, not {len(macs)}")
    return [
        VBLADE,
        "-b", str(ex.bufcnt),
        "-m", ",".join(macs),
        *(["-r"] if ex.readonly else []),
        *(["-s"] if ex.sync else []),
        *(["-d"] if ex.direct else []),
        *(["-o", str(ex.offset)] if ex.offset else []),
        *(["-l", str(ex.length)] if ex.length is not None else []),
        str(ex.shelf), str(ex.slot), interface, ex.path,
    ]  # fmt: skip


def _under(path: str, dirs: tuple[str, ...]) -> bool:
    return any(path.startswith(d) for d in dirs)


def unit_context(hdr: str, ex: Export, server: Server, macs: list[str], part: str = "",
                 interface: str | None = None) -> dict[str, Any]:
    """The template's values for one vblade of `ex` on `interface` (default: the server's first)."""
    block_device = ex.path.startswith("/dev/") and not ex.path.startswith("/dev/shm/")
    iface = interface or server.interface
    return {
        "header": hdr,
        "export": ex.name,
        "target": ex.target,
        "interface": iface,
        "part": part,
        "device_unit": device_unit(iface),
        "exec_start": " ".join(unit_quote(a, command=True) for a in vblade_argv(ex, iface, macs)),
        # A block device: allow just that node (DevicePolicy=closed). A file: no devices, and the file
        # writable (or readable) in an otherwise read-only file system.
        "device_allow": f"{unit_quote(ex.path)} {'r' if ex.readonly else 'rw'}" if block_device else None,
        "paths_setting": "ReadOnlyPaths" if ex.readonly else "ReadWritePaths",
        "path": unit_quote(ex.path),
        "protect_home": "read-only" if _under(ex.path, HOME_DIRS) else "yes",
        "private_tmp": "no" if _under(ex.path, TMP_DIRS) else "yes",
    }


def render_units(inv: Inventory) -> FileTree:
    """The units of every export some machine uses: one per run of MAX_MACS MACs and per server interface."""
    hdr = inventory_header(inv)
    files: FileTree = {}
    for ex in inv.exports.values():
        if ex.cow is not None:
            continue  # vblade cannot serve it
        server = inv.servers[ex.server]
        macs = allowed_macs(inv, ex)
        parts = mac_parts(macs)
        ifaces = server.interfaces
        for n, iface in enumerate(ifaces, 1):
            for i, run in enumerate(parts, 1):
                part = f", MACs {(i - 1) * MAX_MACS + 1}-{(i - 1) * MAX_MACS + len(run)} of {len(macs)}" \
                    if len(parts) > 1 else ""
                if len(ifaces) > 1:
                    part = f", path {n} of {len(ifaces)}{part}"
                ctx = unit_context(hdr, ex, server, run, part, iface)
                text = render_template("export/vblade.service.j2", ctx)
                files[f"export/{unit_name(ex, i, iface if len(ifaces) > 1 else None)}"] = RenderedFile(text)
    return files
