"""Transports and the server loop over real sockets: subprocess and in-thread servers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from netbootgen.aoe import protocol as p
from netbootgen.aoe.address import InterfaceAddress, UnixDgramAddress, UnixStreamAddress, parse_transport
from netbootgen.aoe.process import ServeProcess
from netbootgen.aoe.server import ServeLoop, open_transport
from netbootgen.aoe.store import ExportSpec, OpenExport
from netbootgen.aoe.stream import UnixStreamTransport
from netbootgen.aoe.target import Target
from netbootgen.run import run
from netbootgen.testing.client import DgramChannel, Initiator, StreamChannel

TMAC = bytes.fromhex("020000000102")
SECTORS = 2048


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(os.urandom(SECTORS * 512))
    return path


def serve(tmp: Path, *args: str) -> ServeProcess:
    """`netbootgen serve ARGS` in a child process, ready; its output in tmp/serve.log."""
    return ServeProcess(args, tmp / "serve.log")


def stop_server(served: ServeProcess) -> str:
    status = served.stop()
    assert status == 0, served.output()
    return served.output()


def recv_announcement(channel: DgramChannel | StreamChannel, timeout: float = 5.0) -> bytes:
    frame = channel.recv(timeout)
    assert frame is not None, "no announcement"
    return frame


def check_session(
    ini: Initiator, disk: Path, sectors: int = 2, scnt: int = 2, bufcnt: int = p.DEFAULT_BUFCNT
) -> None:
    """Query, IDENTIFY, write and read back through the initiator."""
    cfg = ini.query()
    assert (cfg.bufcnt, cfg.scnt, cfg.ccmd) == (bufcnt, scnt, 0)
    assert (ini.shelf, ini.slot, ini.target_mac) == (1, 2, TMAC)
    page = ini.identify()
    assert p.identify_capacity(page) == SECTORS
    data = os.urandom(sectors * 512)
    ini.write(100, data)
    assert ini.read(100, sectors) == data
    assert disk.read_bytes()[100 * 512 : (100 + sectors) * 512] == data
    # The untouched neighbour reads back from the file.
    assert ini.read(100 + sectors, 1) == disk.read_bytes()[(100 + sectors) * 512 : (101 + sectors) * 512]


# -- address parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("unix-dgram:/a/t.sock:/a/q.sock", UnixDgramAddress(Path("/a/t.sock"), Path("/a/q.sock"))),
        ("unix-dgram:t.sock:q.sock", UnixDgramAddress(Path("t.sock"), Path("q.sock"))),
        ("unix-stream:/run/aoe.sock", UnixStreamAddress(Path("/run/aoe.sock"))),
        ("iface:eth0", InterfaceAddress("eth0")),
    ],
)
def test_parse_transport(text: str, address: object) -> None:
    assert parse_transport(text) == address
    assert str(address) == text


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("eth0", "expected unix-dgram"),
        ("udp:1.2.3.4:5", "unknown transport 'udp'"),
        ("unix-dgram:/only-one", "expected unix-dgram:BIND_PATH:PEER_PATH"),
        ("unix-dgram::/q", "expected unix-dgram:BIND_PATH:PEER_PATH"),
        ("unix-dgram:/a:/b:/c", "expected unix-dgram:BIND_PATH:PEER_PATH"),
        ("unix-dgram:/a:/a", "must differ"),
        ("unix-stream:", "empty socket path"),
        ("unix-stream:/" + "x" * 120, "longer than 107 bytes"),
        ("iface:", "not a valid interface name"),
        ("iface:a-very-long-interface-name", "not a valid interface name"),
    ],
)
def test_parse_transport_errors(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_transport(text)


# -- subprocess: unix-dgram ----------------------------------------------------------------------


def test_serve_unix_dgram_subprocess(disk: Path, sockdir: Path) -> None:
    tsock, qsock = sockdir / "t.sock", sockdir / "q.sock"
    proc = serve(sockdir, "--export", f"1.2={disk}", "--transport", f"unix-dgram:{tsock}:{qsock}")
    try:
        assert tsock.exists()
        time.sleep(0.3)  # the first announcement goes nowhere: QEMU is "not up yet"
        with DgramChannel(qsock, tsock) as ch:
            # The startup announcement is repeated until the first request arrives.
            a = recv_announcement(ch, 3.0)
            assert a[:6] == p.BROADCAST_MAC and a[6:12] == TMAC and a[14] == 0x18 and a[19] == 1
            assert a[16:19] == b"\x00\x01\x02" and a[20:24] == bytes(4) and len(a) == 60
            assert p.parse_config(a).scnt == 2
            check_session(Initiator(ch), disk)
            # After a request, no more announcements.
            while (extra := ch.recv(1.5)) is not None:
                assert p.parse_header(extra).tag != 0, "announced again after the first request"
            proc.signal(signal.SIGUSR1)
            time.sleep(0.3)
        err = stop_server(proc)
    finally:
        proc.stop()
    assert f"netbootgen serve: e1.2 -> {disk} ({SECTORS} sectors, rw) on unix-dgram:{tsock}:{qsock}" in err
    counters = "netbootgen serve: e1.2: frames=5 bytes_read=1536 bytes_written=1024 errors=0"
    assert err.count(counters) == 2, err  # SIGUSR1 dump and exit
    assert not tsock.exists(), "bound socket left behind"


def test_serve_replaces_stale_socket_and_refuses_other_files(disk: Path, sockdir: Path) -> None:
    tsock, qsock = sockdir / "t.sock", sockdir / "q.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(os.fspath(tsock))
    stale.close()
    proc = serve(sockdir, "--export", f"1.2={disk}", "--transport", f"unix-dgram:{tsock}:{qsock}")
    try:
        with DgramChannel(qsock, tsock) as ch:
            assert Initiator(ch).query().bufcnt == p.DEFAULT_BUFCNT
    finally:
        stop_server(proc)
    tsock.write_text("not a socket")
    refused = run([sys.executable, "-m", "netbootgen.aoe", "--export", f"1.2={disk}",
                   "--transport", f"unix-dgram:{tsock}:{qsock}"], check=False, timeout=10)
    assert refused.returncode == 2
    assert "--transport" in refused.stderr and "not a socket" in refused.stderr
    assert tsock.read_text() == "not a socket"


# -- subprocess: unix-stream ---------------------------------------------------------------------


def test_serve_unix_stream_subprocess_two_clients(disk: Path, sockdir: Path) -> None:
    path = sockdir / "aoe.sock"
    proc = serve(sockdir, "--export", f"1.2={disk}", "--transport", f"unix-stream:{path}", "--mtu", "9000",
                 "--bufcnt", "16")
    try:
        with StreamChannel(path) as c1, StreamChannel(path) as c2:
            # Each client is greeted with an announcement.
            for c in (c1, c2):
                a = recv_announcement(c)
                assert a[:6] == p.BROADCAST_MAC and p.parse_config(a).scnt == 17
            i1 = Initiator(c1, mac=bytes.fromhex("525400000001"))
            i2 = Initiator(c2, mac=bytes.fromhex("525400000002"))
            check_session(i1, disk, sectors=17, scnt=17, bufcnt=16)
            check_session(i2, disk, sectors=1, scnt=17, bufcnt=16)
            # Replies go back on the connection the request came in on.
            assert c1.recv(0.3) is None
            # A frame trickling in byte by byte is reassembled.
            tag = i2.next_tag()
            frame = p.build_ata_frame(TMAC, i2.mac, 1, 2, tag, cmd=0x24, lba=5, scnt=1, aflags=0x40)
            wire = struct.pack(">I", len(frame)) + frame
            for i in range(len(wire)):
                c2.sock.sendall(wire[i : i + 1])
            reply = c2.recv(5)
            assert reply is not None and p.parse_header(reply).tag == tag
            assert reply[36:] == disk.read_bytes()[5 * 512 : 6 * 512]
            assert c1.recv(0.2) is None
            # Several frames in one write are all answered, in order.
            tags = [i1.next_tag() for _ in range(5)]
            burst = b"".join(
                struct.pack(">I", len(f)) + f
                for f in (p.build_ata_frame(TMAC, i1.mac, 1, 2, t, cmd=0xEC, scnt=1) for t in tags)
            )
            c1.sock.sendall(burst)
            got = [p.parse_header(r).tag for r in (c1.recv(5) for _ in tags) if r is not None]
            assert got == tags
        # A client that sends garbage is dropped; the server keeps serving others.
        with StreamChannel(path) as bad, StreamChannel(path) as good:
            recv_announcement(bad)
            bad.sock.sendall(b"\xff\xff\xff\xff" + bytes(100))
            with pytest.raises(ConnectionError):
                while True:
                    if bad.recv(5) is None:
                        raise AssertionError("connection not closed")
            recv_announcement(good)
            assert Initiator(good).query().scnt == 17
        err = stop_server(proc)
    finally:
        proc.stop()
    assert "e1.2: frames=" in err and "bytes_written=9216" in err  # 17 + 1 sectors
    assert "client 1 connected" in err and "bad frame length 4294967295" in err
    assert not path.exists()


# -- in-thread server ----------------------------------------------------------------------------


def test_in_thread_server_stop(disk: Path, sockdir: Path) -> None:
    tsock, qsock = sockdir / "t.sock", sockdir / "q.sock"
    exp = OpenExport(ExportSpec(1, 2, disk))
    target = Target([exp], TMAC)
    server = ServeLoop(target, open_transport(f"unix-dgram:{tsock}:{qsock}"), announce_interval=0.1)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with DgramChannel(qsock, tsock) as ch:
            assert recv_announcement(ch, 2.0)[19] == 1
            check_session(Initiator(ch), disk)
    finally:
        server.stop()
        thread.join(5)
        exp.close()
    assert not thread.is_alive()
    assert not tsock.exists()
    assert exp.frames == 5 and exp.bytes_written == 1024


def test_in_thread_stream_server(disk: Path, sockdir: Path) -> None:
    path = sockdir / "s.sock"
    with OpenExport(ExportSpec(1, 2, disk)) as exp:
        transport = open_transport(f"unix-stream:{path}")
        assert isinstance(transport, UnixStreamTransport)
        server = ServeLoop(Target([exp], TMAC), transport)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            with StreamChannel(path) as ch:
                recv_announcement(ch)
                check_session(Initiator(ch), disk)
                assert transport.clients == 1
        finally:
            server.stop()
            thread.join(5)
    assert not thread.is_alive() and not path.exists()


def test_dgram_peer_restart_reannounces(disk: Path, sockdir: Path) -> None:
    tsock, qsock = sockdir / "t.sock", sockdir / "q.sock"
    with OpenExport(ExportSpec(1, 2, disk)) as exp:
        server = ServeLoop(
            Target([exp], TMAC), open_transport(f"unix-dgram:{tsock}:{qsock}"), announce_interval=0.1
        )
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            with DgramChannel(qsock, tsock) as ch:
                recv_announcement(ch)
                Initiator(ch).query()
            # The peer went away; the next reply fails, so announcements resume for its successor.
            with DgramChannel(qsock, tsock) as ch:
                ch.send(p.build_ata_frame(TMAC, b"\x52\x54\0\0\0\1", 1, 2, 5, cmd=0xEC, scnt=1))
                assert ch.recv(2.0) is not None  # reply to the new peer
        finally:
            server.stop()
            thread.join(5)


# -- AF_PACKET on a veth pair --------------------------------------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def veth() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2")
    a, b = f"aoe{uuid.uuid4().hex[:6]}", f"aoe{uuid.uuid4().hex[:6]}"
    try:
        _ip("link", "add", a, "mtu", "9000", "type", "veth", "peer", "name", b, "mtu", "9000")
    except subprocess.CalledProcessError as e:
        pytest.skip(f"cannot create veth pair: {e.stderr.decode().strip()}")
    try:
        _ip("link", "set", a, "up")
        _ip("link", "set", b, "up")
        yield a, b
    finally:
        subprocess.run(["ip", "link", "del", a], capture_output=True)


def test_iface_transport_veth(disk: Path, veth: tuple[str, str], sockdir: Path) -> None:
    tif, cif = veth
    client = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(p.ETH_P_AOE))
    client.bind((cif, p.ETH_P_AOE))
    client.settimeout(5)
    cmac = client.getsockname()[4]
    proc = serve(sockdir, "--export", f"1.2={disk}", "--transport", f"iface:{tif}")
    try:
        with open(f"/sys/class/net/{tif}/address") as f:
            tmac = p.parse_mac(f.read())
        # The startup announcement (sent once) is a broadcast from the interface MAC.
        a = client.recv(9100)
        assert a[:6] == p.BROADCAST_MAC and a[6:12] == tmac and p.parse_config(a).scnt == 17
        client.send(p.build_config_frame(p.BROADCAST_MAC, cmac, 0xFFFF, 0xFF, 0x55))
        r = client.recv(9100)
        assert r[:6] == cmac and r[6:12] == tmac and r[20:24] == struct.pack(">I", 0x55)
        data = os.urandom(17 * 512)
        client.send(
            p.build_ata_frame(tmac, cmac, 1, 2, 0x56, cmd=0x34, lba=3, scnt=17, aflags=0x41, data=data)
        )
        assert client.recv(9100)[27] == 0x40
        client.send(p.build_ata_frame(tmac, cmac, 1, 2, 0x57, cmd=0x24, lba=3, scnt=17, aflags=0x40))
        r = client.recv(9100)
        assert r[27] == 0x40 and r[36:] == data
        err = stop_server(proc)
    finally:
        client.close()
        proc.stop()
    assert f"on iface:{tif}" in err and "MTU 9000 (17 sectors per frame)" in err
    assert "e1.2: frames=3 bytes_read=8704 bytes_written=8704 errors=0" in err
