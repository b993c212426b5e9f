"""Transport addresses of the AoE target and their text form (`parse_transport`).

- ``unix-dgram:BIND:PEER``: one frame per datagram; QEMU ``-netdev dgram`` with
  ``local.path=PEER,remote.path=BIND``.
- ``unix-stream:PATH``: listen on PATH; every frame carries a 4-byte big-endian length prefix;
  QEMU ``-netdev stream,server=off,addr.type=unix,addr.path=PATH``.  Several clients at once.
- ``iface:NAME``: AF_PACKET raw socket on a real interface (needs CAP_NET_RAW).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

UNIX_PATH_MAX = 107


@dataclass(frozen=True)
class UnixDgramAddress:
    bind: Path
    peer: Path

    def __str__(self) -> str:
        return f"unix-dgram:{os.fspath(self.bind)}:{os.fspath(self.peer)}"


@dataclass(frozen=True)
class UnixStreamAddress:
    path: Path

    def __str__(self) -> str:
        return f"unix-stream:{os.fspath(self.path)}"


@dataclass(frozen=True)
class InterfaceAddress:
    name: str

    def __str__(self) -> str:
        return f"iface:{self.name}"


TransportAddress = UnixDgramAddress | UnixStreamAddress | InterfaceAddress

TRANSPORT_SYNTAX = "unix-dgram:BIND_PATH:PEER_PATH | unix-stream:PATH | iface:NAME"


def _check_unix_path(path: str) -> Path:
    if not path:
        raise ValueError("empty socket path")
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        raise ValueError(f"socket path {path!r} longer than {UNIX_PATH_MAX} bytes")
    return Path(path)


def parse_transport(text: str) -> TransportAddress:
    """Parse a transport address; raises ValueError naming the bad part."""
    kind, sep, rest = text.partition(":")
    if not sep:
        raise ValueError(f"{text!r}: expected {TRANSPORT_SYNTAX}")
    if kind == "unix-dgram":
        bind, sep, peer = rest.partition(":")
        if not sep or not bind or not peer or ":" in peer:
            raise ValueError(f"{text!r}: expected unix-dgram:BIND_PATH:PEER_PATH")
        if bind == peer:
            raise ValueError(f"{text!r}: BIND_PATH and PEER_PATH must differ")
        return UnixDgramAddress(_check_unix_path(bind), _check_unix_path(peer))
    if kind == "unix-stream":
        return UnixStreamAddress(_check_unix_path(rest))
    if kind == "iface":
        if not rest or len(rest) >= 16 or "/" in rest or any(c.isspace() for c in rest):
            raise ValueError(f"{text!r}: {rest!r} is not a valid interface name")
        return InterfaceAddress(rest)
    raise ValueError(f"{text!r}: unknown transport {kind!r} (expected {TRANSPORT_SYNTAX})")
