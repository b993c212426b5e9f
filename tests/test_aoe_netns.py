"""The AF_PACKET transport (`iface:NAME`) against an attacker on the same segment, in a network namespace.

A veth pair lives in a private network namespace: the target serves one end (in a thread of this process,
whose sockets are created inside the namespace through setns(2)), a raw socket on the other end plays the
initiator and the attacker. Frames that arrived 802.1Q/802.1ad-tagged reach a socket bound to the AoE
ethertype with the tag stripped and `sll_pkttype = PACKET_OTHERHOST`; they, frames to another unicast MAC and
frames from a group (multicast/broadcast) source MAC must get no reply and change nothing, on both hot paths.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from netbootgen.aoe import protocol as p
from netbootgen.aoe.server import ServeLoop, open_transport
from netbootgen.aoe.store import ExportSpec, OpenExport
from netbootgen.aoe.target import Target
from netbootgen.run import run

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
TARGET_IF, CLIENT_IF = "aoe-t", "aoe-c"
CLIENT = bytes.fromhex("525400123456")
SECTORS = 64


def _ip(*args: str) -> None:
    run(["ip", *args])


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 (network namespace)")
    name = f"nbg-aoe-{uuid.uuid4().hex[:8]}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "add", TARGET_IF, "type", "veth", "peer", "name", CLIENT_IF)
        _ip("-n", name, "link", "set", CLIENT_IF, "address", p.format_mac(CLIENT))
        for dev in (TARGET_IF, CLIENT_IF):
            _ip("-n", name, "link", "set", dev, "up")
        yield name
    finally:
        run(["ip", "netns", "del", name], check=False)


def in_netns(name: str, fn: Callable[[], T]) -> T:
    """Run fn in a thread that joined the namespace (setns moves only the calling thread); sockets it
    creates stay in the namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed")
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            error.append(e)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _client() -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(p.ETH_P_AOE))
    sock.bind((CLIENT_IF, p.ETH_P_AOE))
    return sock


def _tag(frame: bytes, tpid: int, vid: int) -> bytes:
    """The frame with an 802.1Q (0x8100) or 802.1ad (0x88A8) tag inserted after the MACs."""
    return frame[:12] + tpid.to_bytes(2, "big") + vid.to_bytes(2, "big") + frame[12:]


@pytest.mark.parametrize("hot_path", ["c", "python"])
def test_no_answers_across_vlans_or_to_groups(tmp_path: Path, netns: str, hot_path: str) -> None:
    disk = tmp_path / "disk.img"
    content = os.urandom(SECTORS * 512)
    disk.write_bytes(content)
    transport = in_netns(netns, lambda: open_transport(f"iface:{TARGET_IF}", hot_path))
    client = in_netns(netns, _client)
    # The raw sender sees every frame on the link, whatever its destination (so a reply to a group shows).
    raw = in_netns(netns, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))
    raw.bind((CLIENT_IF, 0))
    exp = OpenExport(ExportSpec(1, 2, disk))
    tmac = transport.hardware_mac()
    assert tmac is not None
    target = Target([exp], tmac)
    server = ServeLoop(target, transport, announce_interval=None)
    assert transport.hot_path == hot_path
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client.settimeout(5)
    try:
        def read(tag: int, src: bytes = CLIENT, dst: bytes = tmac) -> bytes:
            return p.build_ata_frame(dst, src, 1, 2, tag, cmd=0x24, lba=0, scnt=1)

        def write(tag: int, src: bytes = CLIENT) -> bytes:
            return p.build_ata_frame(tmac, src, 1, 2, tag, cmd=0x34, lba=1, scnt=1, aflags=0x41, data=bytes(512))

        def replies_until(tag: int) -> list[bytes]:
            """Every ATA reply the client sees up to the one with `tag` (the start-up announcement aside)."""
            got = []
            while True:
                r = client.recv(9100)
                if r[12:14] == p.ETH_P_AOE.to_bytes(2, "big") and r[14] & 0x08 and r[19] == 0:
                    got.append(r)
                    if p.parse_header(r).tag == tag:
                        return got

        # The set-up works: an untagged READ from the client is answered.
        raw.send(read(1))
        (r,) = replies_until(1)
        assert r[36:548] == content[:512]
        attacks = [
            _tag(read(2), 0x8100, 5),  # another VLAN (802.1Q)
            _tag(write(3), 0x8100, 5),
            _tag(read(4), 0x88A8, 6),  # another service VLAN (802.1ad)
            _tag(write(5), 0x88A8, 6),
            read(6, dst=bytes.fromhex("02aabbccddee")),  # another station
            read(7, src=p.BROADCAST_MAC),  # group source: the reply would go to everybody
            read(8, src=bytes.fromhex("01005e000001")),
            write(9, src=bytes.fromhex("33330000fb00")),
        ]
        for frame in attacks:
            raw.send(frame)
        # A last good request: every reply to the frames before it would have come first.
        raw.send(read(10))
        tags = [p.parse_header(r).tag for r in replies_until(10)]
        assert tags == [10], f"answered {tags[:-1]} (tagged, foreign or group-source requests)"
    finally:
        server.stop()
        thread.join(5)
        client.close()
        raw.close()
        exp.close()
    assert not thread.is_alive()
    assert disk.read_bytes() == content
    assert exp.frames == 2 and exp.bytes_written == 0
    stats = transport.stats()
    assert f"hot_path={hot_path}" in stats and "foreign=5" in stats  # 4 tagged, 1 for another station
    assert target.group_sources == 3
