"""Multipath: one `serve` on several transports, each answering from its own MAC (netbootgen.aoe.paths), and an
inventory server on several interfaces (`interfaces = [...]`: a transport, or a vblade unit, per interface)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from netbootgen.aoe import fastpath
from netbootgen.aoe import protocol as p
from netbootgen.aoe.address import InterfaceAddress
from netbootgen.aoe.command import serve_command
from netbootgen.aoe.paths import PathError, default_mac, plan_paths
from netbootgen.aoe.process import ServeProcess
from netbootgen.aoe.store import ExportSpec
from netbootgen.errors import InventoryError
from netbootgen.export.vblade import render_units
from netbootgen.inventory import load_inventory
from netbootgen.run import run as run_cmd
from netbootgen.testing.client import DgramChannel, Initiator
from tests.conftest import BASE_INVENTORY, edit
from tests.test_aoe_netns import in_netns

E12 = ExportSpec(1, 2, Path("x"))
INI_A = p.parse_mac("52:54:00:12:34:56")
INI_B = p.parse_mac("52:54:00:12:34:57")


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(serve_command, list(args))
    return result.exit_code, result.output


# -- --transport and --mac -----------------------------------------------------------------------------------


def test_default_macs_follow_the_transport_position(sockdir: Path) -> None:
    paths = plan_paths([f"unix-dgram:{sockdir}/t0:{sockdir}/q0", "iface:eth7", f"unix-stream:{sockdir}/s"], [], E12)
    assert [x.mac.hex() if x.mac else None for x in paths] == ["020000000102", None, "020002000102"]
    assert isinstance(paths[1].address, InterfaceAddress)
    assert default_mac(E12) == default_mac(E12, 0) == bytes.fromhex("020000000102")  # one transport: as before


def test_macs_pair_with_the_transports_that_are_not_iface_in_order(sockdir: Path) -> None:
    transports = [f"unix-dgram:{sockdir}/t0:{sockdir}/q0", "iface:eth7", f"unix-stream:{sockdir}/s"]
    paths = plan_paths(transports, ["02:00:00:00:00:0a", "02-00-00-00-00-0B"], E12)
    assert [x.mac.hex() if x.mac else None for x in paths] == ["02000000000a", None, "02000000000b"]
    assert [x.text for x in paths] == transports


@pytest.mark.parametrize(
    ("transports", "macs", "option", "value", "message"),
    [
        (["unix-dgram:{d}/t:{d}/q", "unix-dgram:{d}/t2:{d}/t"], [], "--transport", "unix-dgram:{d}/t2:{d}/t",
         "socket {d}/t is already used by --transport 'unix-dgram:{d}/t:{d}/q'"),
        (["unix-stream:{d}/s", "unix-stream:{d}//s"], [], "--transport", "unix-stream:{d}//s", "already used"),
        (["iface:eth0", "iface:eth0"], [], "--transport", "iface:eth0", "interface eth0 is already used"),
        (["unix-stream:{d}/s", "tcp:x"], [], "--transport", "tcp:x", "unknown transport 'tcp'"),
        (["unix-stream:{d}/s", "unix-stream:{d}/s2"], ["02:00:00:00:00:01"], "--mac", "02:00:00:00:00:01",
         "given 1 time for 2 transports other than iface:"),
        (["unix-stream:{d}/s", "iface:eth0"], ["02:00:00:00:00:01", "02:00:00:00:00:02"], "--mac",
         "02:00:00:00:00:02", "given 2 times for 1 transport other than iface:"),
        (["unix-stream:{d}/s", "unix-stream:{d}/s2"], ["02:00:00:00:00:01", "02:00:00:00:00:01"], "--mac",
         "02:00:00:00:00:01", "is already the MAC of --transport 'unix-stream:{d}/s' (every path needs its own MAC)"),
        (["unix-stream:{d}/s"], ["03:00:00:00:00:01"], "--mac", "03:00:00:00:00:01", "is a multicast address"),
        (["unix-stream:{d}/s"], ["zz"], "--mac", "zz", "not a valid MAC"),
        (["iface:eth0", "iface:eth1"], ["02:00:00:00:00:01"], "--mac", "02:00:00:00:00:01",
         "cannot be used with an iface: transport"),
        ([f"unix-stream:{{d}}/s{i}" for i in range(17)], [], "--transport", "unix-stream:{d}/s16", "at most 16"),
    ],
)
def test_bad_paths_name_the_option_and_the_value(
    sockdir: Path, transports: list[str], macs: list[str], option: str, value: str, message: str
) -> None:
    d = os.fspath(sockdir)
    transports = [t.format(d=d) for t in transports]
    with pytest.raises(PathError) as info:
        plan_paths(transports, macs, E12)
    assert (info.value.option, info.value.value) == (option, value.format(d=d))
    assert message.format(d=d) in info.value.message
    # The command line says the same, exits 2 and binds nothing.
    disk = sockdir / "disk.img"
    disk.write_bytes(bytes(8 * 512))
    args = ["--export", f"1.2={disk}"]
    for t in transports:
        args += ["--transport", t]
    for m in macs:
        args += ["--mac", m]
    code, out = run(*args)
    assert code == 2, out
    assert f"Invalid value for '{option}': {value.format(d=d)!r}" in out
    assert message.format(d=d) in " ".join(out.split())
    assert os.listdir(sockdir) == ["disk.img"]


def test_faults_refuse_a_stream_path_by_name(sockdir: Path) -> None:
    disk = sockdir / "disk.img"
    disk.write_bytes(bytes(8 * 512))
    two = ["--transport", f"unix-dgram:{sockdir}/t:{sockdir}/q", "--transport", f"unix-stream:{sockdir}/s"]
    code, out = run("--export", f"1.2={disk}", *two, "--fault", "drop=0.1")
    assert code == 2 and "Invalid value for '--fault'" in out and f"not 'unix-stream:{sockdir}/s'" in out, out
    assert sorted(os.listdir(sockdir)) == ["disk.img"]


def test_a_transport_that_cannot_be_bound_leaves_no_other_bound(sockdir: Path) -> None:
    disk = sockdir / "disk.img"
    disk.write_bytes(bytes(8 * 512))
    code, out = run("--export", f"1.2={disk}", "--transport", f"unix-dgram:{sockdir}/t:{sockdir}/q",
                    "--transport", f"unix-stream:{sockdir}/missing/s")
    assert code == 2 and f"Invalid value for '--transport': 'unix-stream:{sockdir}/missing/s'" in out, out
    assert os.listdir(sockdir) == ["disk.img"]  # the first one's socket was closed and removed


# -- one serve, two paths, one protocol state ----------------------------------------------------------------


def _dump(served: ServeProcess, lines: int) -> str:
    """SIGUSR1, then wait for the counters to be logged (`lines` more lines than before)."""
    before = served.output().count("\n")
    served.signal(signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while served.output().count("\n") < before + lines:
        assert time.monotonic() < deadline, served.output()
        time.sleep(0.02)
    return served.output()


@pytest.mark.parametrize("hot_path", ["c", "python"] if fastpath.AVAILABLE else ["python"])
def test_two_paths_answer_from_their_own_macs_over_one_state(sockdir: Path, hot_path: str) -> None:
    disk = sockdir / "disk.img"
    original = os.urandom(64 * 512)
    disk.write_bytes(original)
    paths = [(sockdir / f"t{i}.sock", sockdir / f"q{i}.sock") for i in range(2)]
    args = ["--export", f"1.2={disk}", "--hot-path", hot_path, "--mac-allow", p.format_mac(INI_A),
            "--mac-allow", p.format_mac(INI_B)]
    for t, q in paths:
        args += ["--transport", f"unix-dgram:{t}:{q}"]
    with ServeProcess(args, sockdir / "serve.log") as served, \
            DgramChannel(paths[0][1], paths[0][0]) as ch0, DgramChannel(paths[1][1], paths[1][0]) as ch1:
        one = Initiator(ch0, mac=INI_A, shelf=1, slot=2, timeout=3.0)
        two = Initiator(ch1, mac=INI_B, shelf=1, slot=2, timeout=3.0)
        one.query()
        two.query()
        # The initiator tells the paths apart by the source MAC of the replies.
        assert one.target_mac == bytes.fromhex("020000000102") and two.target_mac == bytes.fromhex("020001000102")
        data = os.urandom(2 * 512)  # 2 sectors per frame at MTU 1500
        one.write(8, data)
        assert two.read(8, 2) == data  # one file behind both paths
        assert disk.read_bytes() == original[: 8 * 512] + data + original[10 * 512 :]
        # A mask list edited through path 0 (answered in Python) applies on path 1 (its C engine re-syncs).
        ch0.send(p.build_mask_frame(one.target_mac, INI_A, 1, 2, 77, mcmd=1,
                                    directives=[(p.MaskDirective.DELETE, INI_B)]))
        r = ch0.recv(2.0)
        assert r is not None and [mac for _, mac in p.parse_mask(r).directives] == [INI_A]
        ch1.send(p.build_ata_frame(two.target_mac, INI_B, 1, 2, 78, cmd=0x24, lba=0, scnt=1))
        assert ch1.recv(0.5) is None
        assert one.read(0, 1) == original[:512]
        log = _dump(served, 3)  # the export's and each path's counters
    log = served.output()
    for i, (t, q) in enumerate(paths):
        assert re.search(rf"MTU 1500 \(2 sectors per frame\), bufcnt 64, hot path {hot_path} on unix-dgram:{t}:{q}",
                         log), log
        m = re.findall(rf"unix-dgram:{t}:{q}: dropped=0 hot_path={hot_path}.* requests=(\d+) "
                       rf"mac=02:00:0{i}:00:01:02", log)
        assert len(m) == 2, log  # on SIGUSR1 and at exit
        # path 0: query, write, mask edit, read; path 1: query, read (the denied read is no request)
        assert int(m[-1]) == (4 if i == 0 else 2), log
    assert "e1.2: frames=6 bytes_read=1536 bytes_written=1024 errors=0 denied=1 broadcast=0" in log


# -- inventory: interfaces = [...] ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "key", "message"),
    [
        ('interfaces = ["eth0", "eth1"]\ninterface = "eth0"', "servers.store1.interfaces",
         "give interface = 'eth0' or interfaces = ['eth0', 'eth1'], not both"),
        ("interfaces = []", "servers.store1.interfaces", "is empty"),
        ('interfaces = "eth0"', "servers.store1.interfaces", "must be a list of strings, not 'eth0'"),
        ('interfaces = ["eth0", 5]', "servers.store1.interfaces", "must be a list of strings"),
        ('interfaces = ["eth0", "eth 1"]', "servers.store1.interfaces[1]", "'eth 1' is not an interface name"),
        ('interfaces = ["eth0", "eth0:1"]', "servers.store1.interfaces[1]", "'eth0:1' is not an interface name"),
        ('interfaces = ["eth0", "eth1", "eth0"]', "servers.store1.interfaces[2]", "'eth0' is already interfaces[0]"),
        ("mtu = 1500", "servers.store1.interface", "is required (or interfaces = [...]"),
    ],
)
def test_interfaces_validation_names_field_and_value(
    make_inventory: Callable[..., Path], server: str, key: str, message: str
) -> None:
    path = make_inventory(('interface = "eth0"\nmtu = 1500', server))
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    assert f"{key}: {message}" in str(info.value)


def test_interfaces_are_loaded_in_order(make_inventory: Callable[..., Path]) -> None:
    inv = load_inventory(make_inventory(('interface = "eth0"', 'interfaces = ["eth1", "eth0", "bond0"]')))
    server = inv.servers["store1"]
    assert server.interfaces == ("eth1", "eth0", "bond0") and server.interface == "eth1"
    single = load_inventory(make_inventory()).servers["store1"]
    assert single.interfaces == ("eth0",)


def test_vblade_unit_per_interface(make_inventory: Callable[..., Path]) -> None:
    inv = load_inventory(make_inventory(('interface = "eth0"', 'interfaces = ["eth0", "enp4s0"]')))
    units = render_units(inv)
    assert sorted(units) == [f"export/netbootgen-aoe-root-node{n}@{i}.service" for n in (1, 2)
                             for i in ("enp4s0", "eth0")]
    unit = units["export/netbootgen-aoe-root-node1@enp4s0.service"].text
    assert "ExecStart=/usr/sbin/vblade -b 64 -m 52:54:00:12:34:56 0 1 enp4s0 /srv/aoe/node1.img" in unit
    assert "BindsTo=sys-subsystem-net-devices-enp4s0.device" in unit and "path 2 of 2" in unit
    assert "ExecStart=/usr/sbin/vblade -b 64 -m 52:54:00:12:34:56 0 1 eth0 /srv/aoe/node1.img" in \
        units["export/netbootgen-aoe-root-node1@eth0.service"].text


def test_serve_inventory_opens_one_iface_per_interface(write_inventory: Callable[..., Path], tmp_path: Path) -> None:
    """`lo` opens (as root); the second interface does not exist: the error names it, so both were tried."""
    if os.geteuid() != 0:
        pytest.skip("an AF_PACKET socket needs CAP_NET_RAW")
    for n in (1, 2):
        (tmp_path / f"node{n}.img").write_bytes(bytes(8 * 512))
    text = edit(BASE_INVENTORY, ('interface = "eth0"', 'interfaces = ["lo", "nbgmissing0"]'),
                *((f'"/srv/aoe/node{n}.img"', f'"{tmp_path}/node{n}.img"') for n in (1, 2)))
    path = write_inventory(textwrap.dedent(text))
    code, out = run(os.fspath(path), "--server", "store1")
    assert code == 2, out
    assert "Invalid value for '--transport': 'iface:nbgmissing0'" in out


def _exchange(sock: socket.socket, frame: bytes, tag: int) -> bytes:
    """Send a request on a raw socket; the reply with its tag (our own outgoing frames and announcements aside)."""
    sock.send(frame)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        r = sock.recv(9100)
        if r[12:14] == p.ETH_P_AOE.to_bytes(2, "big") and r[14] & 0x08 and p.parse_header(r).tag == tag:
            return r
    raise AssertionError(f"no reply to tag {tag}")


def test_inventory_server_on_two_interfaces_serves_both(write_inventory: Callable[..., Path], tmp_path: Path) -> None:
    """`serve INVENTORY --server store1` with interfaces = [aoe-t0, aoe-t1] (two veth pairs in a network
    namespace): each interface answers from its own MAC, and both reach the same export."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 (network namespace)")
    clients = [p.parse_mac("52:54:00:12:34:56"), p.parse_mac("52:54:00:12:34:58")]  # two NICs of node1
    for n in (1, 2):
        (tmp_path / f"node{n}.img").write_bytes(os.urandom(64 * 512))
    text = edit(BASE_INVENTORY, ('interface = "eth0"', 'interfaces = ["aoe-t0", "aoe-t1"]'),
                ('macs = ["52:54:00:12:34:56"]', 'macs = ["52:54:00:12:34:56", "52:54:00:12:34:58"]'),
                *((f'"/srv/aoe/node{n}.img"', f'"{tmp_path}/node{n}.img"') for n in (1, 2)))
    inv = write_inventory(textwrap.dedent(text))
    ns = f"nbg-mp-{uuid.uuid4().hex[:8]}"
    run_cmd(["ip", "netns", "add", ns])
    log = tmp_path / "serve.log"
    served, status = None, None
    socks: list[socket.socket] = []
    try:
        for i, mac in enumerate(clients):
            run_cmd(["ip", "-n", ns, "link", "add", f"aoe-t{i}", "type", "veth", "peer", "name", f"aoe-c{i}"])
            run_cmd(["ip", "-n", ns, "link", "set", f"aoe-c{i}", "address", p.format_mac(mac)])
            for dev in (f"aoe-t{i}", f"aoe-c{i}"):
                run_cmd(["ip", "-n", ns, "link", "set", dev, "up"])
        served = ServeProcess([os.fspath(inv), "--server", "store1"], log, prefix=["ip", "netns", "exec", ns])
        for i in range(2):
            sock = in_netns(ns, lambda i=i: socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                                                          socket.htons(p.ETH_P_AOE)))
            sock.bind((f"aoe-c{i}", p.ETH_P_AOE))
            sock.settimeout(5)
            socks.append(sock)
        tmacs = []
        for i, (sock, mac) in enumerate(zip(socks, clients, strict=True)):
            r = _exchange(sock, p.build_config_frame(p.BROADCAST_MAC, mac, 0, 1, 100 + i), 100 + i)
            tmacs.append(r[6:12])
        ifmacs = [json.loads(run_cmd(["ip", "-n", ns, "-j", "link", "show", f"aoe-t{i}"]).stdout)[0]["address"]
                  for i in range(2)]
        assert [p.format_mac(m) for m in tmacs] == ifmacs and tmacs[0] != tmacs[1]
        data = os.urandom(1024)
        _exchange(socks[0], p.build_ata_frame(tmacs[0], clients[0], 0, 1, 7, cmd=0x34, lba=3, scnt=2, aflags=0x41,
                                              data=data), 7)
        r = _exchange(socks[1], p.build_ata_frame(tmacs[1], clients[1], 0, 1, 8, cmd=0x24, lba=3, scnt=2), 8)
        assert r[36:1060] == data
        assert (tmp_path / "node1.img").read_bytes()[3 * 512 : 5 * 512] == data
    finally:
        for sock in socks:
            sock.close()
        if served is not None:
            status = served.stop()
        run_cmd(["ip", "netns", "del", ns], check=False)
    text = log.read_text()
    assert status == 0, text
    for i in range(2):
        assert re.search(rf"iface:aoe-t{i}: dropped=0 hot_path=\w+ .*requests=2 mac={ifmacs[i]}", text), text
