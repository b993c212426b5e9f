"""`netbootgen serve`: run the user-mode AoE target from the command line."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from netbootgen.aoe import protocol as p
from netbootgen.aoe.target import Export, ExportSpec, Target, parse_export_spec
from netbootgen.aoe.transport import (
    TRANSPORT_SYNTAX,
    InterfaceAddress,
    Server,
    Transport,
    open_transport,
    parse_transport,
)

log = logging.getLogger("netbootgen.aoe")

DEFAULT_UNIX_MTU = 1500
EXPORT_SYNTAX = "SHELF.SLOT=PATH[,ro][,offset=N][,length=N]"


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


def default_mac(spec: ExportSpec) -> bytes:
    """Locally administered unicast MAC derived from the address: e1.2 -> 02:00:00:00:01:02."""
    return b"\x02\x00\x00" + spec.shelf.to_bytes(2, "big") + bytes((spec.slot,))


def _bad(hint: str, value: str, message: str) -> click.BadParameter:
    return click.BadParameter(f"{value!r}: {message}", param_hint=f"'{hint}'")


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


def open_exports(
    specs: Sequence[ExportSpec], values: Sequence[str], *, sync: bool, direct: bool
) -> list[Export]:
    """Open every export (closing those already open on failure) and reject overlapping windows."""
    exports: list[Export] = []
    try:
        for spec, value in zip(specs, values, strict=True):
            try:
                exp = Export(spec, sync=sync, direct=direct)
            except OSError as e:
                raise _bad(
                    "--export", value, f"cannot open {os.fspath(spec.path)}: {e.strerror or e}"
                ) from None
            except ValueError as e:
                raise _bad("--export", value, str(e)) from None
            for other, other_value in zip(exports, values, strict=False):
                if exp.overlaps(other) and not (exp.readonly and other.readonly):
                    exp.close()
                    raise _bad("--export", value, f"window overlaps {other_value!r}")
            exports.append(exp)
    except BaseException:
        for exp in exports:
            exp.close()
        raise
    return exports


def _start_message(exp: Export, transport: Transport) -> str:
    window = ""
    if exp.spec.offset or exp.spec.length is not None:
        window = f", sectors {exp.spec.offset}-{exp.spec.offset + exp.sectors - 1}"
    mode = "ro" if exp.readonly else "rw"
    return f"{exp.name} -> {os.fspath(exp.spec.path)} ({exp.sectors} sectors{window}, {mode}) on {transport}"


@click.command(name="serve")
@click.option(
    "--export",
    "export_values",
    multiple=True,
    metavar=EXPORT_SYNTAX,
    help="Export a file or block device as eSHELF.SLOT; offset/length in 512-byte sectors. Repeatable.",
)
@click.option("--transport", "transport_value", required=True, metavar="SPEC", help=TRANSPORT_SYNTAX)
@click.option(
    "--mac-allow", multiple=True, metavar="MAC", help="Only answer these initiator MACs. Repeatable."
)
@click.option("--sync", is_flag=True, help="Open exports with O_SYNC.")
@click.option("--direct", is_flag=True, help="Open exports with O_DIRECT.")
@click.option(
    "--mtu",
    type=click.IntRange(min=p.MIN_MTU, max=65535),
    default=None,
    help=f"MTU used for sectors per frame [default: {DEFAULT_UNIX_MTU}, or the interface MTU].",
)
@click.option(
    "--mac",
    "mac_value",
    metavar="MAC",
    default=None,
    help="Target MAC [default: 02:00:00:SS:SS:LL from the first export; the interface MAC for iface].",
)
@click.option(
    "--bufcnt",
    type=click.IntRange(2, 0xFFFF),
    default=p.DEFAULT_BUFCNT,
    show_default=True,
    help="Outstanding requests advertised to initiators (Linux keeps min(bufcnt, 64) in flight).",
)
@click.option(
    "--ready-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Create this file once the sockets are bound.",
)
def serve_command(
    export_values: tuple[str, ...],
    transport_value: str,
    mac_allow: tuple[str, ...],
    sync: bool,
    direct: bool,
    mtu: int | None,
    mac_value: str | None,
    bufcnt: int,
    ready_file: Path | None,
) -> None:
    """Serve files or block devices over ATA-over-Ethernet to QEMU guests or a real interface."""
    if not export_values:
        raise click.UsageError("Missing option '--export'.")
    specs = parse_export_options(export_values)
    try:
        address = parse_transport(transport_value)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="'--transport'") from None
    allow: list[bytes] = []
    for value in mac_allow:
        try:
            allow.append(p.parse_mac(value))
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="'--mac-allow'") from None
    if len(set(allow)) > p.MAX_MASKS:
        raise click.BadParameter(f"at most {p.MAX_MASKS} MACs", param_hint="'--mac-allow'")
    mac: bytes | None = None
    if mac_value is not None:
        if isinstance(address, InterfaceAddress):
            raise click.UsageError(
                "--mac cannot be used with an iface: transport (the interface MAC is used)"
            )
        try:
            mac = p.parse_mac(mac_value)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="'--mac'") from None
        if mac[0] & 1:
            raise _bad("--mac", mac_value, "is a multicast address")
    if ready_file is not None:
        ready_file.unlink(missing_ok=True)

    setup_logging()
    exports = open_exports(specs, export_values, sync=sync, direct=direct)
    try:
        try:
            transport = open_transport(address)
        except OSError as e:
            raise _bad("--transport", transport_value, e.strerror or str(e)) from None
        try:
            target_mac = mac or transport.hardware_mac() or default_mac(specs[0])
            target_mtu = mtu or transport.hardware_mtu() or DEFAULT_UNIX_MTU
            try:
                target = Target(exports, target_mac, target_mtu, bufcnt, mac_allow=allow)
            except ValueError as e:
                raise click.UsageError(str(e)) from None
            server = Server(
                target,
                transport,
                announce_interval=None if isinstance(address, InterfaceAddress) else 1.0,
                ready_file=ready_file,
            )
        except BaseException:
            transport.close()
            raise
        for exp in exports:
            log.info("%s", _start_message(exp, transport))
        log.info(
            "pid %d, MAC %s, MTU %d (%d sectors per frame), bufcnt %d%s",
            os.getpid(),
            p.format_mac(target_mac),
            target_mtu,
            target.max_scnt,
            bufcnt,
            f", allowed MACs {', '.join(p.format_mac(m) for m in allow)}" if allow else "",
        )
        server.install_signal_handlers()
        server.serve_forever()
        log.info("stopped")
    finally:
        for exp in exports:
            exp.close()
