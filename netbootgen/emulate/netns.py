"""boot-test's real network (`--network netns`, root): a network namespace with a bridge, no slirp.

The bridge carries the name of the export server's interface in the inventory (the namespace has its own
names), so that the rendered vblade unit's command runs unchanged on it; it holds the DHCP/TFTP server's
address. The guest's NIC is a tap on the bridge. dnsmasq runs with the rendered configuration (moved to the
bridge, the build's TFTP root and the namespace's subnet), the AoE target (`netbootgen serve --transport
iface:BRIDGE`, or vblade) on the bridge itself, and a dnsmasq of its own sends IPv6 router advertisements
there. A second namespace, joined to the bridge by a veth pair, can hold another DHCP server that hands out
addresses only (for the proxy-DHCP mode).

Processes start inside a namespace because the calling thread joins it (setns(2)) while it spawns them:
children inherit the namespace, and nothing of netbootgen needs to know. Everything started through a
Netns is stopped, and the namespaces deleted (which removes the bridge, the tap and the veths), on close(),
also when the boot failed.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import IO

from netbootgen.emulate.qemu import tap_netdev
from netbootgen.emulate.targetplan import TargetPlan
from netbootgen.errors import InputError, NetbootgenError
from netbootgen.export.vblade import mac_parts, vblade_argv
from netbootgen.fleet import allowed_macs
from netbootgen.inventory import Inventory, Machine
from netbootgen.model import Dhcp
from netbootgen.pxe.dnsmasq import render_dnsmasq_conf, with_network
from netbootgen.run import PathLike, run, spawn

CLONE_NEWNET = 0x40000000
SUBNET = "10.213.0.0/24"
SERVER_IP = "10.213.0.1"  # the bridge: dnsmasq's DHCP and TFTP
PEER_IP = "10.213.0.2"  # the other DHCP server's namespace
DYNAMIC = ("10.213.0.100", "10.213.0.199")
ROUTER6 = "fd00:213::1/64"  # the bridge's IPv6 address: router advertisements for this prefix
BRIDGE_MAC = "02:00:00:00:ae:01"  # fixed: a bridge otherwise takes the lowest MAC of its ports
TAP = "nbg-tap0"
PEER_VETH = "nbg-peer0"
STOP_TIMEOUT = 5.0


def need_root() -> None:
    if os.geteuid() != 0:
        raise InputError("--network netns needs root (network namespaces, a bridge and a tap)")


@contextmanager
def joined(ns: str) -> Iterator[None]:
    """The calling thread in network namespace `ns` (as `ip netns` names it) for the block."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {ns} failed")
        finally:
            os.close(fd)
        try:
            yield
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:  # pragma: no cover - the original namespace is always there
                raise OSError(ctypes.get_errno(), "setns back failed")
    finally:
        os.close(home)


class Netns:
    """The namespace, its bridge and tap, and what runs in it. A context manager: close() on exit."""

    def __init__(self, bridge: str, mtu: int = 1500, work: Path | None = None) -> None:
        need_root()
        self.name = f"nbg-{uuid.uuid4().hex[:8]}"
        self.peer_name: str | None = None
        self.bridge, self.tap, self.mtu = bridge, TAP, mtu
        self.work = work or Path("/tmp")
        self.procs: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []
        run(["ip", "netns", "add", self.name])
        try:
            self._ip("link", "set", "lo", "up")
            self._ip("link", "add", bridge, "address", BRIDGE_MAC, "mtu", str(mtu), "type", "bridge")
            self._ip("addr", "add", f"{SERVER_IP}/24", "dev", bridge)
            self._ip("tuntap", "add", "dev", TAP, "mode", "tap")
            self._ip("link", "set", TAP, "master", bridge, "mtu", str(mtu), "up")
            self._ip("link", "set", bridge, "up")
        except BaseException:
            self.close()
            raise

    def _ip(self, *args: str, ns: str | None = None) -> None:
        run(["ip", "-n", ns or self.name, *args])

    def add_peer(self) -> str:
        """A second namespace on the bridge (veth), with PEER_IP: for another DHCP server. Its name."""
        self.peer_name = f"{self.name}-peer"
        run(["ip", "netns", "add", self.peer_name])
        self._ip("link", "add", PEER_VETH, "mtu", str(self.mtu), "type", "veth", "peer", "name", "eth0",
                 "netns", self.peer_name)
        self._ip("link", "set", PEER_VETH, "master", self.bridge, "up")
        self._ip("addr", "add", f"{PEER_IP}/24", "dev", "eth0", ns=self.peer_name)
        self._ip("link", "set", "eth0", "up", ns=self.peer_name)
        self._ip("link", "set", "lo", "up", ns=self.peer_name)
        return self.peer_name

    @contextmanager
    def inside(self, peer: bool = False) -> Iterator[None]:
        """The calling thread in the namespace (or the peer's) for the block: what it starts runs there."""
        with joined(self.peer_name if peer and self.peer_name else self.name):
            yield

    def start(self, what: str, argv: Sequence[PathLike], log: Path, *, peer: bool = False) -> subprocess.Popen[bytes]:
        """Start `argv` in the namespace, its output to `log`; stopped by close()."""
        out = log.open("wb")
        with self.inside(peer):
            proc = spawn(argv, output=out)
        self.procs.append((what, proc, out))
        return proc

    def check_running(self) -> None:
        for what, proc, _ in self.procs:
            if proc.poll() is not None:
                raise NetbootgenError(f"{what} exited with status {proc.returncode} (log in {self.work})")

    def close(self) -> None:
        for _, proc, out in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            out.close()
        self.procs.clear()
        for ns in (self.peer_name, self.name):
            if ns:
                run(["ip", "netns", "del", ns], check=False)

    def __enter__(self) -> Netns:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def dnsmasq_argv(conf: Path, work: Path, tag: str = "dnsmasq") -> list[str]:
    """dnsmasq in the foreground with `conf`, logging to stderr, its leases and pid file in `work`, as root (the
    TFTP tree may sit in a folder only root can read)."""
    return ["dnsmasq", "--keep-in-foreground", "--log-facility=-", f"--conf-file={conf}", "--user=root",
            f"--dhcp-leasefile={work / (tag + '.leases')}", f"--pid-file={work / (tag + '.pid')}"]


def wait_for_log(log: Path, text: str, timeout: float, netns: Netns) -> None:
    """Until `text` is in `log` (a started server says it is ready), or one of the processes exited."""
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        netns.check_running()
        if time.monotonic() > deadline:
            raise NetbootgenError(f"{log.name}: no {text!r} within {timeout:.0f} s:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)


class NetnsBoot(Netns):
    """The network of one boot-test run: the namespace, dnsmasq with the inventory's rendered configuration
    (its [dhcp] table, or a DHCP server's defaults when it has none), and vblade when it is the AoE target
    (`netbootgen serve` is boot-test's to start, inside(), with serve_args())."""

    def __init__(self, inv: Inventory, m: Machine, image: Path, tftp: Path, work: Path, *, mtu: int = 1500,
                 target: str = "serve", dhcp_mode: str | None = None) -> None:
        ex = inv.exports[m.export]
        super().__init__(inv.servers[ex.server].interface, mtu, work)
        try:
            self.ex, self.image, self.allowed = ex, image, allowed_macs(inv, ex)
            dhcp = inv.dhcp or Dhcp(subnet=SUBNET)
            if dhcp_mode is not None:
                dhcp = replace(dhcp, mode=dhcp_mode)
            self.dhcp = with_network(dhcp, interface=self.bridge, tftp_root=os.fspath(tftp), subnet=SUBNET,
                                     range_=DYNAMIC)
            self._start_router()
            if self.dhcp.mode == "proxy":
                self._start_address_server()
            conf = work / "dnsmasq.conf"
            conf.write_text(render_dnsmasq_conf(inv, self.dhcp))
            log = work / "dnsmasq.log"
            self.start("dnsmasq", dnsmasq_argv(conf, work), log)
            wait_for_log(log, "TFTP root is", 15, self)
            if target == "vblade":
                self.start("vblade", self.vblade_argv(), work / "vblade.log")
            elif target != "serve":
                raise InputError(f"--aoe-target must be serve or vblade, not {target!r}")
        except BaseException:
            self.close()
            raise

    def _start_router(self) -> None:
        """IPv6 router advertisements on the bridge, as a network with an IPv6 router sends them: without any,
        iPXE waits ~12 s for its router solicitations to time out before it boots (slirp answers them). A
        dnsmasq of its own (RA only, no DHCP), so that the rendered configuration runs unchanged."""
        self._ip("addr", "add", ROUTER6, "dev", self.bridge, "nodad")
        conf = self.work / "router.conf"
        conf.write_text(f"# IPv6 router advertisements only\nport=0\ninterface={self.bridge}\nbind-interfaces\n"
                        f"enable-ra\ndhcp-range=::,constructor:{self.bridge},ra-only\n")
        log = self.work / "router.log"
        self.start("the router-advertisement dnsmasq", dnsmasq_argv(conf, self.work, "router"), log)
        wait_for_log(log, "router advertisement on", 15, self)

    def _start_address_server(self) -> None:
        """Another DHCP server, in its own namespace on the bridge, that gives addresses and no boot file."""
        self.add_peer()
        conf = self.work / "dhcp-only.conf"
        conf.write_text(f"# addresses only: the network's own DHCP server\nport=0\ninterface=eth0\n"
                        f"bind-interfaces\nlog-dhcp\ndhcp-range={DYNAMIC[0]},{DYNAMIC[1]},255.255.255.0,1h\n")
        log = self.work / "dhcp-only.log"
        self.start("the addresses-only dnsmasq", dnsmasq_argv(conf, self.work, "dhcp-only"), log, peer=True)
        wait_for_log(log, "DHCP, IP range", 15, self)

    def vblade_argv(self) -> list[str]:
        """The rendered unit's ExecStart for the export (the first MAC_PARTS run holds the machine), on the
        boot's image: the bridge has the server interface's name."""
        return vblade_argv(replace(self.ex, path=os.fspath(self.image)), self.bridge, mac_parts(self.allowed)[0])

    def serve_args(self) -> list[str]:
        """`netbootgen serve` on the bridge through AF_PACKET, answering the export's machines."""
        return [
            "--export", f"{self.ex.shelf}.{self.ex.slot}={self.image}",
            "--transport", f"iface:{self.bridge}",
            "--mtu", str(self.mtu),
            *[a for mac in self.allowed for a in ("--mac-allow", mac)],
        ]  # fmt: skip

    def plan(self, plan: TargetPlan | None) -> TargetPlan | None:
        """boot-test's `netbootgen serve` plan: none at all when vblade serves the export."""
        return TargetPlan(absent=True) if any(what == "vblade" for what, _, _ in self.procs) else plan

    @property
    def netdev(self) -> str:
        return tap_netdev(self.tap)


def open_network(network: str, inv: Inventory, m: Machine, image: Path, tftp: Path, work: Path, mtu: int,
                 target: str, dhcp_mode: str | None, say: Callable[[str], None]) -> NetnsBoot | None:
    """boot-test's network: None for slirp (QEMU's own), else a NetnsBoot with dnsmasq (and vblade) running."""
    if network == "slirp":
        if target != "serve" or dhcp_mode is not None:
            raise InputError("--aoe-target vblade and --dhcp-mode go with --network netns")
        return None
    if network != "netns":
        raise InputError(f"--network must be slirp or netns, not {network!r}")
    if dhcp_mode not in (None, "server", "proxy"):
        raise InputError(f"--dhcp-mode must be server or proxy, not {dhcp_mode!r}")
    net = NetnsBoot(inv, m, image, tftp, work, mtu=mtu, target=target, dhcp_mode=dhcp_mode)
    extra = " next to an addresses-only DHCP server" if net.peer_name else ""
    say(f"network namespace {net.name}: bridge {net.bridge} ({SERVER_IP}), tap {net.tap}, dnsmasq "
        f"({net.dhcp.mode}{extra}), AoE target {target} on {net.bridge}")
    return net


@contextmanager
def network_scope(net: NetnsBoot | None) -> Iterator[None]:
    """For the block, the calling thread in `net`'s namespace (so that the AoE target and QEMU start there);
    `net` closed after it, whatever happened. Nothing for slirp (None)."""
    if net is None:
        yield
        return
    with net, net.inside():
        yield
