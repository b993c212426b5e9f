"""One systemd unit per export, running Debian's vblade."""

from __future__ import annotations

from netbootgen.inventory import Export, Inventory
from netbootgen.modules.aoe import source_name
from netbootgen.render import FileTree, RenderedFile, header, render_template


def unit_name(ex: Export) -> str:
    return f"netbootgen-aoe-{ex.name}.service"


def device_unit(interface: str) -> str:
    return f"sys-subsystem-net-devices-{interface.replace('-', chr(92) + 'x2d')}.device"


def allowed_macs(inv: Inventory, ex: Export) -> list[str]:
    return sorted(mac for m in inv.machines.values() if m.export == ex.name for mac in m.macs)


def vblade_argv(inv: Inventory, ex: Export) -> list[str]:
    server = inv.servers[ex.server]
    argv = ["/usr/sbin/vblade", "-b", str(ex.bufcnt)]
    macs = allowed_macs(inv, ex)
    if macs:
        argv += ["-m", ",".join(macs)]
    if ex.readonly:
        argv.append("-r")
    if ex.sync:
        argv.append("-s")
    if ex.direct:
        argv.append("-d")
    if ex.offset:
        argv += ["-o", str(ex.offset)]
    if ex.length is not None:
        argv += ["-l", str(ex.length)]
    argv += [str(ex.shelf), str(ex.slot), server.interface, ex.path]
    return argv


def render_units(inv: Inventory) -> FileTree:
    hdr = header(source_name(inv))
    files: FileTree = {}
    for ex in inv.exports.values():
        server = inv.servers[ex.server]
        ctx = {
            "header": hdr,
            "export": ex,
            "server": server,
            "device_unit": device_unit(server.interface),
            "exec_start": " ".join(vblade_argv(inv, ex)),
        }
        files[f"export/{unit_name(ex)}"] = RenderedFile(render_template("export/vblade.service.j2", ctx))
    return files
