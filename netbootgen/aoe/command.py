"""`netbootgen serve`: run the user-mode AoE target from the command line."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click

from netbootgen.aoe import fastpath
from netbootgen.aoe import protocol as p
from netbootgen.aoe.address import TRANSPORT_SYNTAX, InterfaceAddress, UnixStreamAddress
from netbootgen.aoe.fault import FAULT_SYNTAX, FaultSpec, parse_fault_spec
from netbootgen.aoe.paths import (
    MAC_HELP,
    TRANSPORT_HELP_MULTIPATH,
    PathError,
    open_paths,
    path_macs,
    path_mtu,
    plan_paths,
)
from netbootgen.aoe.server import ServeLoop
from netbootgen.aoe.store import ExportSpec, OpenExport, parse_export_spec
from netbootgen.aoe.target import Target
from netbootgen.aoe.transport import Transport
from netbootgen.errors import InputError
from netbootgen.fleet import allowed_macs
from netbootgen.inventory import Inventory, load_inventory

log = logging.getLogger("netbootgen.aoe")

DEFAULT_UNIX_MTU = 1500
EXPORT_SYNTAX = "SHELF.SLOT=PATH[,ro][,offset=N][,length=N][,cow=OVERLAY][,allow=MAC+MAC...]"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at emit time (plays well with click's CliRunner)."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def setup_logging() -> None:
    """Log the target's messages to stderr as 'netbootgen serve: ...' unless already configured."""
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("netbootgen serve: %(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(logging.INFO)


def _bad(hint: str, value: str, message: str) -> click.BadParameter:
    return click.BadParameter(f"{value!r}: {message}", param_hint=f"'{hint}'")


def split_allow(value: str) -> tuple[str, tuple[bytes, ...]]:
    """Take an export's own allow-list out of an --export value: '1.0=PATH,ro,allow=MAC+MAC' ->
    ('1.0=PATH,ro', (MAC, MAC)). ValueError for a malformed MAC or allow= given twice."""
    path, *options = value.split(",")
    rest, allow, seen = [path], [], False
    for part in options:
        key, sep, macs = part.partition("=")
        if key.strip() != "allow" or not sep:
            rest.append(part)
            continue
        if seen:
            raise ValueError(f"{part!r}: option 'allow' given twice")
        seen = True
        for mac in macs.split("+"):
            try:
                allow.append(p.parse_mac(mac))
            except ValueError as e:
                raise ValueError(f"{part!r}: {e}") from None
    return ",".join(rest), tuple(dict.fromkeys(allow))


def parse_export_options(values: Sequence[str]) -> list[ExportSpec]:
    specs: list[ExportSpec] = []
    seen: dict[tuple[int, int], str] = {}
    for value in values:
        try:
            spec = parse_export_spec(value)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="'--export'") from None
        key = (spec.shelf, spec.slot)
        if key in seen:
            raise _bad("--export", value, f"{spec.name} is already exported by {seen[key]!r}")
        seen[key] = value
        specs.append(spec)
    return specs


@dataclass(frozen=True)
class ServedExport:
    """What to open for one export: the window, its open flags and its own config-reply settings."""

    spec: ExportSpec
    label: str  # names the export in messages: the --export value, or 'exports.NAME'
    sync: bool = False
    direct: bool = False
    bufcnt: int | None = None
    mac_allow: tuple[bytes, ...] = field(default=())


@dataclass(frozen=True)
class InventoryPlan:
    """The exports one inventory server serves, and those it leaves out (deny by default)."""

    exports: list[ServedExport]
    skipped: list[str]  # export names no machine boots from


def inventory_plan(inv: Inventory, server: str) -> InventoryPlan:
    """The exports of `server` in `inv`, each allowing exactly the MACs of the machines that boot from it.

    Like the vblade units (netbootgen.export.vblade), an export that no machine uses is not served at all.
    Raises InputError for an unknown server or one with nothing to serve.
    """
    if server not in inv.servers:
        names = ", ".join(repr(n) for n in inv.servers) or "none"
        raise InputError(f"{inv.source}: no server named {server!r} (servers: {names})")
    served: list[ServedExport] = []
    skipped: list[str] = []
    for ex in inv.exports.values():
        if ex.server != server:
            continue
        macs = allowed_macs(inv, ex)
        if not macs:
            skipped.append(ex.name)
            continue
        spec = ExportSpec(
            ex.shelf,
            ex.slot,
            Path(ex.path),
            readonly=ex.readonly,
            offset=ex.offset,
            length=ex.length,
            cow=Path(ex.cow) if ex.cow is not None else None,
        )
        served.append(
            ServedExport(
                spec,
                f"exports.{ex.name}",
                sync=ex.sync,
                direct=ex.direct,
                bufcnt=ex.bufcnt,
                mac_allow=tuple(p.parse_mac(m) for m in macs),
            )
        )
    if not served:
        why = f" (no machine boots from {', '.join(skipped)})" if skipped else ""
        raise InputError(f"{inv.source}: server {server!r} has no export to serve{why}")
    return InventoryPlan(served, skipped)


def open_served(items: Sequence[ServedExport], fail: Callable[[str, str], Exception]) -> list[OpenExport]:
    """Open every export (closing those already open on failure) and reject overlapping writable windows.

    `fail(label, message)` makes the exception raised for a bad export.
    """
    exports: list[OpenExport] = []
    try:
        for item in items:
            spec = item.spec
            try:
                exp = OpenExport(
                    spec, sync=item.sync, direct=item.direct, bufcnt=item.bufcnt, mac_allow=item.mac_allow
                )
            except OSError as e:
                raise fail(item.label, f"cannot open {os.fspath(spec.path)}: {e.strerror or e}") from None
            except ValueError as e:
                raise fail(item.label, str(e)) from None
            for other, other_item in zip(exports, items, strict=False):
                if exp.overlaps(other) and not (exp.readonly and other.readonly):
                    exp.close()
                    raise fail(item.label, f"window overlaps {other_item.label!r}")
            exports.append(exp)
    except BaseException:
        for exp in exports:
            exp.close()
        raise
    return exports


def _inventory_error(source: str) -> Callable[[str, str], Exception]:
    return lambda label, message: InputError(f"{source}: {label}: {message}")


def _start_message(exp: OpenExport, transports: Sequence[Transport]) -> str:
    window = ""
    if exp.spec.offset or exp.spec.length is not None:
        window = f", sectors {exp.spec.offset}-{exp.spec.offset + exp.sectors - 1}"
    mode = "ro" if exp.readonly else "rw"
    if exp.spec.cow is not None:
        mode = f"cow={os.fspath(exp.spec.cow)}"
    allowed = ""
    if exp.masks:
        shown = ", ".join(p.format_mac(m) for m in exp.masks[:4])
        allowed = f", allowed MACs {shown}" + (f" and {len(exp.masks) - 4} more" if len(exp.masks) > 4 else "")
    return (
        f"{exp.name} -> {os.fspath(exp.spec.path)} ({exp.sectors} sectors{window}, {mode}{allowed}) on "
        + " and ".join(str(t) for t in transports)
    )


@click.command(name="serve")
@click.argument("inventory", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--server",
    "server_name",
    metavar="NAME",
    default=None,
    help="With INVENTORY: serve this server's exports to the MACs of the machines that boot from them.",
)
@click.option(
    "--export",
    "export_values",
    multiple=True,
    metavar=EXPORT_SYNTAX,
    help="Export a file or block device as eSHELF.SLOT; offset/length in 512-byte sectors; cow=OVERLAY never "
    "writes PATH: writes go to the sparse file OVERLAY (and its sector map OVERLAY.map), created when missing "
    "and kept across restarts; allow=MAC+MAC answers only these initiators for this export (as --mac-allow "
    "does for all). Repeatable.",
)
@click.option(
    "--transport",
    "transport_values",
    multiple=True,
    metavar="SPEC",
    help=f"{TRANSPORT_SYNTAX}. {TRANSPORT_HELP_MULTIPATH} [required with --export; default with INVENTORY: "
    "iface:NAME for each of the server's interfaces].",
)
@click.option(
    "--mac-allow", multiple=True, metavar="MAC", help="Only answer these initiator MACs. Repeatable."
)
@click.option("--sync", is_flag=True, help="Open exports with O_SYNC (with INVENTORY: in addition to sync = true).")
@click.option("--direct", is_flag=True, help="Open exports with O_DIRECT (with INVENTORY: in addition to direct).")
@click.option(
    "--mtu",
    type=click.IntRange(min=p.MIN_MTU, max=65535),
    default=None,
    help=f"MTU used for sectors per frame [default: {DEFAULT_UNIX_MTU}, or the interface MTU; with INVENTORY "
    "the server's mtu, at most the interface MTU].",
)
@click.option(
    "--mac",
    "mac_values",
    multiple=True,
    metavar="MAC",
    help=MAC_HELP,
)
@click.option(
    "--bufcnt",
    type=click.IntRange(2, 0xFFFF),
    default=None,
    help=f"Outstanding requests advertised to initiators (Linux keeps min(bufcnt, 64) in flight) [default: "
    f"{p.DEFAULT_BUFCNT}; with INVENTORY each export's bufcnt].",
)
@click.option(
    "--hot-path",
    type=click.Choice(fastpath.HOT_PATHS),
    default="auto",
    show_default=True,
    help="Who answers READ/WRITE requests: c (the C extension netbootgen.aoe._fastpath, on every transport), "
    "python, or auto (c when it is built).",
)
@click.option(
    "--ready-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Create this file once the sockets are bound.",
)
@click.option(
    "--fault",
    "fault_value",
    metavar=FAULT_SYNTAX,
    default=None,
    help="For tests: lose (drop), duplicate (dup) or reorder each frame, requests and replies alike, with these "
    "probabilities, and send every reply MS ms late (delay), with seeded dice (seed): the same seed and frames, "
    "the same faults; counts are logged with the counters. Datagram transports; turns the C hot path off.",
)
def serve_command(
    inventory: Path | None,
    server_name: str | None,
    export_values: tuple[str, ...],
    transport_values: tuple[str, ...],
    mac_allow: tuple[str, ...],
    sync: bool,
    direct: bool,
    mtu: int | None,
    mac_values: tuple[str, ...],
    bufcnt: int | None,
    hot_path: str,
    ready_file: Path | None,
    fault_value: str | None,
) -> None:
    """Serve files or block devices over ATA-over-Ethernet to QEMU guests or a real interface.

    Either give --export (and --transport), or an INVENTORY and --server NAME: then that server's exports are
    served, each answering only the machines that boot from it (an export no machine uses is not served).
    """
    server_mtu: int | None = None
    plan: InventoryPlan | None = None
    if inventory is not None:
        if export_values:
            raise click.UsageError("--export cannot be combined with an INVENTORY (its exports are served)")
        if mac_allow:
            raise click.UsageError(
                "--mac-allow cannot be combined with an INVENTORY (the MACs of the machines are allowed)"
            )
        if server_name is None:
            raise click.UsageError("Missing option '--server' (which of the inventory's servers to run)")
        inv = load_inventory(inventory)
        plan = inventory_plan(inv, server_name)
        server = inv.servers[server_name]
        server_mtu = server.mtu
        if not transport_values:
            transport_values = tuple(f"iface:{name}" for name in server.interfaces)
        items = [
            ServedExport(
                item.spec,
                item.label,
                sync=item.sync or sync,
                direct=item.direct or direct,
                bufcnt=bufcnt or item.bufcnt,
                mac_allow=item.mac_allow,
            )
            for item in plan.exports
        ]
        fail = _inventory_error(inv.source)
    else:
        if server_name is not None:
            raise click.UsageError("--server needs an INVENTORY argument")
        if not export_values:
            raise click.UsageError("Missing option '--export' (or give an INVENTORY and --server).")
        if not transport_values:
            raise click.UsageError("Missing option '--transport'.")
        try:
            split = [split_allow(v) for v in export_values]
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="'--export'") from None
        if mac_allow and any(a for _, a in split):
            raise click.UsageError("--mac-allow cannot be combined with an export's allow= (give each export its "
                                   "own allow= instead)")
        specs = parse_export_options([v for v, _ in split])
        items = [ServedExport(s, v, sync=sync, direct=direct, mac_allow=a)
                 for s, v, (_, a) in zip(specs, export_values, split, strict=True)]

        def fail(label: str, message: str) -> Exception:
            return _bad("--export", label, message)

    try:
        paths = plan_paths(transport_values, mac_values, items[0].spec)
    except PathError as e:
        raise _bad(e.option, e.value, e.message) from None
    streams = [path.text for path in paths if isinstance(path.address, UnixStreamAddress)]
    try:
        fastpath.resolve(hot_path)
    except ValueError as e:
        raise _bad("--hot-path", hot_path, str(e)) from None
    faults: FaultSpec | None = None
    if fault_value is not None:
        try:
            faults = parse_fault_spec(fault_value)
        except ValueError as e:
            raise _bad("--fault", fault_value, str(e)) from None
        if streams:
            raise _bad("--fault", fault_value, f"faults need a datagram transport (unix-dgram or iface), not "
                       f"{streams[0]!r}")
        if hot_path == "c":
            raise click.UsageError("--fault cannot be combined with --hot-path c (faults are applied in Python)")
        hot_path = "python"
    allow: list[bytes] = []
    for value in mac_allow:
        try:
            allow.append(p.parse_mac(value))
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="'--mac-allow'") from None
    if len(set(allow)) > p.MAX_MASKS:
        raise click.BadParameter(f"at most {p.MAX_MASKS} MACs", param_hint="'--mac-allow'")
    if ready_file is not None:
        ready_file.unlink(missing_ok=True)

    setup_logging()
    exports = open_served(items, fail)
    try:
        try:
            transports = open_paths(paths, hot_path)
        except PathError as e:
            raise _bad(e.option, e.value, e.message) from None
        try:
            try:
                macs = path_macs(paths, transports)
            except PathError as e:
                raise _bad(e.option, e.value, e.message) from None
            targets = []
            for transport, target_mac in zip(transports, macs, strict=True):
                target_mtu = path_mtu(transport, mtu, server_mtu, DEFAULT_UNIX_MTU)
                try:
                    targets.append(
                        Target(exports, target_mac, target_mtu, bufcnt or p.DEFAULT_BUFCNT, mac_allow=allow)
                    )
                except ValueError as e:
                    raise click.UsageError(str(e)) from None
            server_loop = ServeLoop(
                targets[0],
                transports[0],
                more_paths=list(zip(targets[1:], transports[1:], strict=True)),
                announce_interval=None if all(isinstance(x.address, InterfaceAddress) for x in paths) else 1.0,
                ready_file=ready_file,
                faults=faults,
            )
        except BaseException:
            for transport in transports:
                transport.close()
            raise
        for exp in exports:
            log.info("%s", _start_message(exp, transports))
        if plan is not None:
            for name in plan.skipped:
                log.info("exports.%s: not served, no machine boots from it", name)
        bufcnts = ", ".join(sorted({str(exp.bufcnt or targets[0].bufcnt) for exp in exports}))
        for target, transport in zip(targets, transports, strict=True):
            log.info(
                "pid %d, MAC %s, MTU %d (%d sectors per frame), bufcnt %s, hot path %s%s",
                os.getpid(),
                p.format_mac(target.mac),
                target.mtu,
                target.max_scnt,
                bufcnts,
                transport.hot_path,
                f" on {transport}" if len(transports) > 1 else "",
            )
        if faults is not None:
            log.info("faults %s (C hot path off)", faults)
        server_loop.install_signal_handlers()
        server_loop.serve_forever()
        log.info("stopped")
    finally:
        for exp in exports:
            exp.close()
