"""The paths of one `netbootgen serve` (multipath): each ``--transport`` with the target MAC it answers from.

The Linux initiator tells the paths to a target apart by the source MAC of the replies and the interface they
come in on (aoecmd.c: a config reply from a new MAC adds a target to eX.Y); it spreads its frames over the
targets of a device and moves them to the others when one stops answering (HARD_SCORN_SECS, 10 s). So every
transport of one serve answers from its own MAC:

- ``iface:NAME`` answers from the interface's MAC;
- every other transport takes the next ``--mac`` in order (one per non-iface transport, or none at all), by
  default 02:00:NN:SS:SS:LL, where NN is the transport's position among the ``--transport`` options (00, 01, ...)
  and SS:SS.LL the first export's shelf and slot (02:00:00:00:01:02 for e1.2 on one transport, as before).

`plan_paths` checks the options (PathError names the option and the value), `open_paths` binds the transports
(all or none), `path_macs` resolves the MACs once they are open, `path_mtu` the MTU of each.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from netbootgen.aoe import protocol as p
from netbootgen.aoe.address import InterfaceAddress, TransportAddress, UnixDgramAddress, parse_transport
from netbootgen.aoe.server import open_transport
from netbootgen.aoe.store import ExportSpec
from netbootgen.aoe.transport import Transport

log = logging.getLogger("netbootgen.aoe")

MAX_PATHS = 16
MAC_HELP = (
    "Target MAC of a transport: one per --transport that is not iface:, in the same order (an iface: transport "
    "answers from its interface's MAC) [default: 02:00:NN:SS:SS:LL, NN the transport's position from 00, SS:SS "
    "and LL the first export's shelf and slot]. Every path needs its own MAC: the initiator tells paths apart by "
    "it. Repeatable."
)
TRANSPORT_HELP_MULTIPATH = (
    "Repeat it to serve the same exports on several paths (multipath: a guest with a NIC on each sees one "
    "target and uses them all, and the others when one is cut)."
)


class PathError(ValueError):
    """A bad --transport or --mac: `option`, `value` and what is wrong."""

    def __init__(self, option: str, value: str, message: str) -> None:
        super().__init__(f"{option} {value!r}: {message}")
        self.option = option
        self.value = value
        self.message = message


@dataclass(frozen=True)
class PathSpec:
    """One path: the --transport text, its address, and the MAC it answers from (None: the interface's)."""

    text: str
    address: TransportAddress
    mac: bytes | None


def default_mac(spec: ExportSpec, index: int = 0) -> bytes:
    """Locally administered unicast MAC from the address and the path: e1.2, path 1 -> 02:00:01:00:01:02."""
    if not 0 <= index <= 0xFF:
        raise ValueError(f"path index {index} out of range 0-255")
    return b"\x02\x00" + bytes((index,)) + spec.shelf.to_bytes(2, "big") + bytes((spec.slot,))


def _names(address: TransportAddress) -> list[str]:
    """What two paths may not share: socket paths (bound or sent to) and interfaces."""
    if isinstance(address, InterfaceAddress):
        return [f"interface {address.name}"]
    if isinstance(address, UnixDgramAddress):
        return [f"socket {os.path.normpath(address.bind)}", f"socket {os.path.normpath(address.peer)}"]
    return [f"socket {os.path.normpath(address.path)}"]


def plan_paths(transports: Sequence[str], macs: Sequence[str], first: ExportSpec) -> list[PathSpec]:
    """Parse the --transport and --mac values into paths; raises PathError for a bad, repeated or unpaired one."""
    if not transports:
        raise PathError("--transport", "", "at least one transport is needed")
    if len(transports) > MAX_PATHS:
        raise PathError("--transport", transports[MAX_PATHS], f"at most {MAX_PATHS} transports")
    addresses: list[TransportAddress] = []
    used: dict[str, str] = {}
    for text in transports:
        try:
            address = parse_transport(text)
        except ValueError as e:
            raise PathError("--transport", text, str(e).removeprefix(f"{text!r}: ")) from None
        for name in _names(address):
            if name in used:
                raise PathError("--transport", text, f"{name} is already used by --transport {used[name]!r}")
        for name in _names(address):
            used[name] = text
        addresses.append(address)
    others = [i for i, a in enumerate(addresses) if not isinstance(a, InterfaceAddress)]
    if macs and not others:
        raise PathError("--mac", macs[0], "cannot be used with an iface: transport (the interface MAC is used)")
    if macs and len(macs) != len(others):
        raise PathError(
            "--mac",
            macs[len(others)] if len(macs) > len(others) else macs[-1],
            f"given {len(macs)} time{'' if len(macs) == 1 else 's'} for {len(others)} transport"
            f"{'' if len(others) == 1 else 's'} other than iface: (give one per such "
            "transport, in the order of the --transport options, or none)",
        )
    chosen: list[bytes | None] = [None] * len(addresses)
    seen: dict[bytes, str] = {}
    for n, i in enumerate(others):
        if macs:
            try:
                mac = p.parse_mac(macs[n])
            except ValueError as e:
                raise PathError("--mac", macs[n], str(e)) from None
            if mac[0] & 1:
                raise PathError("--mac", macs[n], "is a multicast address")
            if mac in seen:
                raise PathError("--mac", macs[n], f"is already the MAC of --transport {seen[mac]!r} (every path "
                                "needs its own MAC)")
        else:
            mac = default_mac(first, i)
        seen[mac] = transports[i]
        chosen[i] = mac
    return [PathSpec(t, a, m) for t, a, m in zip(transports, addresses, chosen, strict=True)]


def open_paths(paths: Sequence[PathSpec], hot_path: str) -> list[Transport]:
    """Open (bind) every path's transport, each with the hot path it allows; all or none (PathError)."""
    opened: list[Transport] = []
    try:
        for path in paths:
            try:
                opened.append(open_transport(path.address, hot_path))
            except OSError as e:
                raise PathError("--transport", path.text, e.strerror or str(e)) from None
    except BaseException:
        for transport in opened:
            transport.close()
        raise
    return opened


def path_macs(paths: Sequence[PathSpec], transports: Sequence[Transport]) -> list[bytes]:
    """The MAC each open path answers from; raises PathError when two paths would share one."""
    macs: list[bytes] = []
    seen: dict[bytes, str] = {}
    for path, transport in zip(paths, transports, strict=True):
        mac = path.mac or transport.hardware_mac()
        if mac is None:
            raise PathError("--transport", path.text, "has no MAC")
        if mac in seen:
            raise PathError("--transport", path.text, f"answers from {p.format_mac(mac)}, as --transport "
                            f"{seen[mac]!r} does (every path needs its own MAC)")
        seen[mac] = path.text
        macs.append(mac)
    return macs


def path_mtu(transport: Transport, mtu: int | None, server_mtu: int | None, default: int) -> int:
    """The MTU a path's target uses for its sectors per frame: --mtu, else the inventory server's mtu (at most the
    interface's, with a warning), else the interface's, else `default`."""
    hw_mtu = transport.hardware_mtu()
    if mtu is not None:
        return mtu
    if server_mtu is not None:
        if hw_mtu and hw_mtu < server_mtu:
            log.warning("%s has MTU %d, below the server's mtu %d: using %d", transport, hw_mtu, server_mtu, hw_mtu)
            return hw_mtu
        return server_mtu
    return hw_mtu or default
