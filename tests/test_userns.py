"""The rootless tap (netbootgen.testing.userns): an unprivileged user gets a tap, an AF_PACKET socket on it and a
QEMU on it inside a user namespace of its own, and none of that outside it."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from netbootgen.errors import CommandFailed
from netbootgen.run import run
from netbootgen.testing.userns import UserNetns

NOBODY = "nobody"
PACKET_SOCKET = ("import socket; s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88A2)); "
                 "s.bind(('tap0', 0)); print('bound', s.getsockname()[0])")


@pytest.fixture
def as_nobody() -> list[str]:
    if os.geteuid() != 0:
        pytest.skip("switching to an unprivileged user needs root (run as that user, everything here is rootless)")
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def test_nobody_gets_a_tap_and_a_packet_socket_inside_its_namespace(as_nobody: list[str]) -> None:
    with UserNetns(user=NOBODY) as ns:
        ns.add_tap("tap0", 9000)
        link = ns.run(["ip", "-o", "link", "show", "tap0"])
        assert "mtu 9000" in link and ",UP" in link, link
        assert ns.run(["/usr/bin/python3", "-c", PACKET_SOCKET]).strip() == "bound tap0"
        assert ns.run(["id", "-u"]).strip() == "0"  # root inside ...
        holder = run(["ps", "-o", "user=", "-p", str(ns.pid)]).stdout.strip()
        assert holder == NOBODY  # ... nobody outside


def test_nobody_cannot_make_a_tap_outside_a_namespace(as_nobody: list[str]) -> None:
    with pytest.raises(CommandFailed, match="Operation not permitted"):
        run([*as_nobody, "ip", "tuntap", "add", "dev", "nbgdenied0", "mode", "tap"])
    assert not os.path.exists("/sys/class/net/nbgdenied0")


def test_qemu_run_by_nobody_opens_the_tap(as_nobody: list[str]) -> None:
    qemu = shutil.which("qemu-system-x86_64")
    assert qemu, "qemu-system-x86_64 is not installed"
    with UserNetns(user=NOBODY) as ns:
        ns.add_tap("tap0", 1500)
        proc = subprocess.run([*ns.prefix, "timeout", "3", qemu, "-nodefaults", "-display", "none", "-S",
                               "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
                               "-device", "virtio-net-pci,netdev=n0"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 124, proc.stderr  # still running when timeout stopped it: the tap opened
        holder = ns.pid
    assert not os.path.exists(f"/proc/{holder}")  # the holder is gone, and the namespaces with it


def test_qemu_run_by_nobody_outside_the_namespace_cannot_open_a_tap(as_nobody: list[str]) -> None:
    qemu = shutil.which("qemu-system-x86_64")
    assert qemu, "qemu-system-x86_64 is not installed"
    proc = subprocess.run([*as_nobody, "timeout", "3", qemu, "-nodefaults", "-display", "none", "-S",
                           "-netdev", "tap,id=n0,ifname=nbgdenied1,script=no,downscript=no",
                           "-device", "virtio-net-pci,netdev=n0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "nbgdenied1" in proc.stderr, proc.stderr
