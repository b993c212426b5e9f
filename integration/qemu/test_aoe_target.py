"""`netbootgen serve` against the real Linux aoe initiator: Debian's kernel under QEMU (TCG, one vCPU).

The guest is a busybox initramfs (netbootgen.testing.guest, no dracut) that discovers the target, reads the whole
disk, writes a known pattern with `dd oflag=direct` at a known offset and reads it back; the host then finds
exactly those bytes in the backing file and nothing else changed. A guest whose MAC is not allowed (by
--mac-allow, or by not being an inventory machine of the export) must never see the disk.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from netbootgen.aoe.process import ServeProcess
from netbootgen.cache import cache_dir
from netbootgen.emulate.qemu import boot_kernel, dgram_netdev, qemu_argv, stream_netdev, tap_netdev
from netbootgen.kernel.fetch import KernelTree
from netbootgen.run import run
from netbootgen.testing.guest import GUEST_MAC, build_initramfs, guest_spec
from netbootgen.testing.userns import UserNetns

DISK_BYTES = 8 << 20
SEEK = 777  # 4 KiB blocks: the pattern starts at byte 3182592, sector 6216
BLOCKS = 12  # 48 KiB
QEMU_TIMEOUT = 60  # hard limit per boot (a healthy one takes 4-8 s under TCG)
OTHER_MAC = "52:54:00:00:00:99"

DATA_SCRIPT = r"""
D=/dev/etherd/__DEV__
wait_dev $D 20 || { echo GUEST-ABSENT; poweroff -f; }
echo "GUEST-FOUND size=$(cat "/sys/block/etherd!__DEV__/size") payload=$(cat "/sys/block/etherd!__DEV__/payload")"
echo "GUEST-READ $(dd if=$D bs=64k iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)"
dd if=/pattern of=$D bs=4096 seek=__SEEK__ count=__BLOCKS__ oflag=direct conv=notrunc 2>/dev/null && echo GUEST-WROTE
echo "GUEST-BACK $(dd if=$D bs=4096 skip=__SEEK__ count=__BLOCKS__ iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)"
echo GUEST-END
poweroff -f
"""

DENY_SCRIPT = r"""
if wait_dev /dev/etherd/__DEV__ 15; then echo GUEST-PRESENT; else echo GUEST-ABSENT; fi
dmesg | grep -F -e aoe -e etherd
echo "GUEST-DMESG $(dmesg | grep -c -e '__DEV__ v[0-9a-f]* has [0-9]* sectors' -e 'etherd/')"
echo GUEST-END
poweroff -f
"""


@pytest.fixture
def disk(work: Path) -> tuple[Path, bytes]:
    data = os.urandom(DISK_BYTES)
    path = work / "disk.img"
    path.write_bytes(data)
    return path, data


@dataclass
class Setup:
    """How the guest's NIC reaches the target: the QEMU -netdev and the target's --transport."""

    netdev: str
    transport: str
    mtu: int
    tap: str | None = None
    inside: tuple[str, ...] = ()  # the command that runs the target and QEMU inside a user namespace


def make_setup(kind: str, mtu: int, work: Path) -> Iterator[Setup]:
    if kind == "stream":
        yield Setup(stream_netdev(work / "s.sock"), f"unix-stream:{work}/s.sock", mtu)
    elif kind == "dgram":
        yield Setup(dgram_netdev(work / "q.sock", work / "t.sock"), f"unix-dgram:{work}/t.sock:{work}/q.sock", mtu)
    elif kind == "userns-tap":  # the rootless tap: no root needed (tests/test_userns.py runs it as nobody)
        with UserNetns() as ns:
            ns.add_tap("tap0", mtu)
            yield Setup(tap_netdev("tap0"), "iface:tap0", mtu, "tap0", tuple(ns.prefix))
    else:
        if os.geteuid() != 0:
            pytest.skip("a tap device needs root")
        if not os.path.exists("/dev/net/tun"):
            pytest.skip("/dev/net/tun is missing")
        tap = f"aoet{uuid.uuid4().hex[:6]}"
        subprocess.run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"], check=True, capture_output=True)
        try:
            subprocess.run(["ip", "link", "set", tap, "mtu", str(mtu), "up"], check=True, capture_output=True)
            yield Setup(tap_netdev(tap), f"iface:{tap}", mtu, tap)
        finally:
            subprocess.run(["ip", "link", "del", tap], capture_output=True)


def boot(qemu: Path, kernel: KernelTree, work: Path, setup: Setup, script: str, *, mac: str = GUEST_MAC,
         files: dict[str, bytes] | None = None) -> str:
    initrd = build_initramfs(kernel.moddir, script, work / "initrd.gz", files=files)
    spec = guest_spec(qemu, boot_kernel(kernel.vmlinuz, cache_dir()), initrd, setup.netdev, mac=mac, mtu=setup.mtu)
    # CommandFailed (with the output) on timeout
    proc = run([*setup.inside, *qemu_argv(spec)], check=False, timeout=QEMU_TIMEOUT)
    out = proc.stdout
    assert "GUEST-END" in out and "GUEST-FAIL" not in out, out[-3000:] + proc.stderr
    return out


def inventory_args(work: Path, disk: Path, machine_mac: str) -> list[str]:
    inv = work / "inv.toml"
    inv.write_text(
        textwrap.dedent(
            f"""\
            [profiles.virtio]
            kernel_version = "auto"

            [servers.store1]
            interface = "nonexistent0"

            [exports.root-node1]
            server = "store1"
            shelf = 0
            slot = 1
            path = "{disk}"

            [machines.node1]
            macs = ["{machine_mac}"]
            export = "root-node1"
            profile = "virtio"
            """
        )
    )
    return [os.fspath(inv), "--server", "store1"]


@pytest.mark.parametrize(
    ("kind", "mtu", "inventory"),
    [("stream", 1500, False), ("dgram", 9000, False), ("tap", 9000, False), ("userns-tap", 9000, False),
     ("stream", 1500, True)],
    ids=["unix-stream-1500", "unix-dgram-9000", "tap-9000", "userns-tap-9000", "inventory-unix-stream"],
)
def test_guest_reads_and_writes(
    qemu: Path, kernel: KernelTree, work: Path, disk: tuple[Path, bytes], kind: str, mtu: int, inventory: bool
) -> None:
    path, original = disk
    pattern = os.urandom(BLOCKS * 4096)
    dev = "e0.1" if inventory else "e1.2"
    script = DATA_SCRIPT.replace("__DEV__", dev).replace("__SEEK__", str(SEEK)).replace("__BLOCKS__", str(BLOCKS))
    for setup in make_setup(kind, mtu, work):
        if inventory:
            args = [*inventory_args(work, path, GUEST_MAC), "--transport", setup.transport]
        else:
            args = ["--export", f"1.2={path}", "--transport", setup.transport, "--mac-allow", GUEST_MAC]
            if setup.tap is None:
                args += ["--mtu", str(mtu)]
        with ServeProcess(args, work / "target.log", prefix=setup.inside) as served:
            out = boot(qemu, kernel, work, setup, script, files={"/pattern": pattern})
        log = served.output()
        context = f"\n--- console ---\n{out[-3000:]}\n--- target ---\n{log}"
        payload = 8704 if mtu == 9000 else 1024
        assert f"GUEST-FOUND size={DISK_BYTES // 512} payload={payload}" in out, context
        assert f"GUEST-READ {hashlib.md5(original).hexdigest()}" in out, context
        assert "GUEST-WROTE" in out, context
        assert f"GUEST-BACK {hashlib.md5(pattern).hexdigest()}" in out, context
        off = SEEK * 4096
        expected = original[:off] + pattern + original[off + len(pattern) :]
        after = path.read_bytes()
        changed = [i for i in range(0, DISK_BYTES, 4096) if after[i : i + 4096] != original[i : i + 4096]]
        assert changed == list(range(off, off + len(pattern), 4096)), context
        assert after == expected, context
        m = re.search(rf"{re.escape(dev)}: frames=(\d+) bytes_read=(\d+) bytes_written=(\d+) errors=0", log)
        assert m, context
        assert int(m.group(2)) >= DISK_BYTES + len(pattern) and int(m.group(3)) == len(pattern), context


@pytest.mark.parametrize("how", ["mac-allow", "inventory"])
def test_guest_with_other_mac_never_sees_the_disk(
    qemu: Path, kernel: KernelTree, work: Path, disk: tuple[Path, bytes], how: str
) -> None:
    path, original = disk
    dev = "e0.1" if how == "inventory" else "e1.2"
    for setup in make_setup("dgram", 1500, work):
        if how == "inventory":
            args = [*inventory_args(work, path, OTHER_MAC), "--transport", setup.transport]
        else:
            args = ["--export", f"1.2={path}", "--transport", setup.transport, "--mac-allow", OTHER_MAC]
        with ServeProcess(args, work / "target.log") as served:
            out = boot(qemu, kernel, work, setup, DENY_SCRIPT.replace("__DEV__", dev))
        log = served.output()
        context = f"\n--- console ---\n{out[-3000:]}\n--- target ---\n{log}"
        assert "GUEST-ABSENT" in out and "GUEST-PRESENT" not in out, context
        # The driver may learn of the target: the unsolicited config reply sent unicast to the allowed MAC
        # reaches this guest too (QEMU's virtio NIC is promiscuous until its driver sets the receive filter, and
        # aoe does not check the destination MAC). But IDENTIFY is never answered: no capacity, no disk.
        assert "GUEST-DMESG 0" in out, context
        m = re.search(rf"{re.escape(dev)}: frames=0 bytes_read=0 bytes_written=0 errors=0 denied=(\d+)", log)
        assert m, context
        assert int(m.group(1)) >= 2, context  # the guest's queries arrived and were ignored
        assert path.read_bytes() == original
