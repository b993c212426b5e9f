#!/usr/bin/env python3
"""Benchmark the netbootgen AoE target (and vblade) against a Linux guest under QEMU.

The guest is a busybox initramfs that loads virtio-net and aoe, discovers e1.2 and runs
`dd iflag=direct` reads and `dd oflag=direct` writes, timing them with /proc/uptime.

    python bench/aoe_qemu_bench.py --kernel-dir ~/.cache/netbootgen/kernels/6.1.0-56-amd64 \
        --setup netbootgen-dgram --setup netbootgen-stream --setup vblade-tap --mtu 1500 --mtu 9000 --runs 3

Setups: netbootgen-dgram, netbootgen-stream (unix sockets, no root), netbootgen-tap and
vblade-tap (a tap device, needs root).  Prints one line per run and the medians.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

MODULES = [
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
    "drivers/net/virtio_net.ko",
    "drivers/block/aoe/aoe.ko",
]

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in __MODULES__; do insmod /mod/$m.ko || echo "BENCH-FAIL insmod $m"; done
for o in $(cat /proc/cmdline); do case $o in rmb=*) R=${o#rmb=};; wmb=*) W=${o#wmb=};; esac; done
ip link set eth0 up
insmod /mod/aoe.ko
echo > /dev/etherd/discover
i=0; while [ ! -b /dev/etherd/e1.2 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
[ -b /dev/etherd/e1.2 ] || { echo BENCH-FAIL no device; poweroff -f; }
echo "BENCH-PAYLOAD $(cat '/sys/block/etherd!e1.2/payload')"
up() { cut -d' ' -f1 /proc/uptime; }
t0=$(up); dd if=/dev/etherd/e1.2 of=/dev/null bs=1M count=$R iflag=direct 2>/dev/null; t1=$(up)
echo "BENCH-READ $R $t0 $t1"
t0=$(up); dd if=/dev/zero of=/dev/etherd/e1.2 bs=1M count=$W oflag=direct 2>/dev/null; t1=$(up)
echo "BENCH-WRITE $W $t0 $t1"
echo BENCH-DONE
poweroff -f
"""


def build_initrd(kernel_dir: Path, out: Path) -> Path:
    """A gzip'ed newc cpio with busybox, the modules and the benchmark init."""
    version = next((kernel_dir / "lib/modules").iterdir()).name
    moddir = kernel_dir / "lib/modules" / version / "kernel"
    root = out / "root"
    for d in ("bin", "dev", "proc", "sys", "mod"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", root / "bin/busybox")
    for m in MODULES:
        shutil.copy2(moddir / m, root / "mod")
    names = " ".join(Path(m).stem for m in MODULES if not m.endswith("aoe.ko"))
    init = root / "init"
    init.write_text(INIT.replace("__MODULES__", names))
    init.chmod(0o755)
    cpio = subprocess.run(
        ["sh", "-c", "find . | cpio -o -H newc --quiet"], cwd=root, check=True, capture_output=True
    ).stdout
    initrd = out / "initrd.gz"
    initrd.write_bytes(gzip.compress(cpio, 1))
    return initrd


def kernel_image(kernel_dir: Path) -> Path:
    return next((kernel_dir / "boot").glob("vmlinuz-*"))


def wait_for(path: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear")
        time.sleep(0.02)


def run_once(args: argparse.Namespace, setup: str, mtu: int, initrd: Path, work: Path) -> dict[str, float]:
    disk = work / "disk.img"
    if not disk.exists():
        with open(disk, "wb") as f:
            f.truncate(max(args.read_mb, args.write_mb) * 2 << 20)
    tap = f"aoetap{uuid.uuid4().hex[:4]}"
    target: subprocess.Popen[bytes] | None = None
    target_log = ""
    serve = [sys.executable, "-m", "netbootgen.aoe", "--export", f"1.2={disk}", "--bufcnt", str(args.bufcnt)]
    ready = work / "ready"
    ready.unlink(missing_ok=True)
    if setup.endswith("-tap"):
        subprocess.run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"], check=True)
        subprocess.run(["ip", "link", "set", tap, "mtu", str(mtu), "up"], check=True)
        netdev = f"tap,id=n0,ifname={tap},script=no,downscript=no"
    elif setup == "netbootgen-dgram":
        netdev = (
            f"dgram,id=n0,local.type=unix,local.path={work}/q.sock,"
            f"remote.type=unix,remote.path={work}/t.sock"
        )
    else:
        netdev = f"stream,id=n0,server=off,addr.type=unix,addr.path={work}/s.sock"
    try:
        if setup == "vblade-tap":
            target = subprocess.Popen(
                ["vblade", "-b", str(args.bufcnt), "1", "2", tap, os.fspath(disk)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            time.sleep(0.3)
        else:
            transport = {
                "netbootgen-dgram": f"unix-dgram:{work}/t.sock:{work}/q.sock",
                "netbootgen-stream": f"unix-stream:{work}/s.sock",
                "netbootgen-tap": f"iface:{tap}",
            }[setup]
            mtu_args = [] if setup.endswith("-tap") else ["--mtu", str(mtu)]
            target = subprocess.Popen(
                [*serve, "--transport", transport, "--ready-file", os.fspath(ready), *mtu_args],
                stderr=subprocess.PIPE,
            )
            wait_for(ready)
        cmd = [
            args.qemu,
            "-nodefaults", "-no-reboot", "-nographic",
            "-m", "512", "-smp", "1",
            "-serial", "stdio",
            "-kernel", os.fspath(kernel_image(args.kernel_dir)),
            "-initrd", os.fspath(initrd),
            "-append", f"console=ttyS0 quiet panic=-1 rmb={args.read_mb} wmb={args.write_mb}",
            "-netdev", netdev,
            "-device", f"virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,host_mtu={mtu}",
        ]  # fmt: skip
        out = subprocess.run(
            cmd, capture_output=True, timeout=args.timeout, stdin=subprocess.DEVNULL
        ).stdout.decode(errors="replace")
    finally:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        if target is not None:
            target.send_signal(signal.SIGTERM)
            try:
                target_log = target.communicate(timeout=10)[1].decode(errors="replace")
            except subprocess.TimeoutExpired:
                target.kill()
                target_log = target.communicate()[1].decode(errors="replace")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if setup.endswith("-tap"):
            subprocess.run(["ip", "link", "del", tap], capture_output=True)
    target_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if "BENCH-DONE" not in out or "BENCH-FAIL" in out:
        raise RuntimeError(f"{setup} mtu {mtu}: guest failed:\n{out[-2000:]}")
    m = re.search(r"dropped=(\d+)", target_log)
    res: dict[str, float] = {
        "target_cpu": target_cpu,
        "io_time": 0.0,
        "dropped": float(m.group(1)) if m else 0.0,
    }
    for kind in ("READ", "WRITE"):
        m = re.search(rf"BENCH-{kind} (\d+) ([\d.]+) ([\d.]+)", out)
        assert m, out
        mb, t0, t1 = int(m.group(1)), float(m.group(2)), float(m.group(3))
        res[kind.lower()] = mb * 1.048576 / max(t1 - t0, 0.01)
        res["io_time"] += t1 - t0
    m = re.search(r"BENCH-PAYLOAD (\d+)", out)
    res["payload"] = float(m.group(1)) if m else 0.0
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--kernel-dir", type=Path, required=True, help="extracted Debian linux-image (boot/, lib/modules/)"
    )
    ap.add_argument(
        "--setup",
        action="append",
        choices=["netbootgen-dgram", "netbootgen-stream", "netbootgen-tap", "vblade-tap"],
    )
    ap.add_argument("--mtu", action="append", type=int)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--read-mb", type=int, default=64)
    ap.add_argument("--write-mb", type=int, default=32)
    ap.add_argument("--bufcnt", type=int, default=16)
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    setups = args.setup or ["netbootgen-dgram"]
    mtus = args.mtu or [1500]
    with tempfile.TemporaryDirectory(prefix="aoeb-") as tmp:
        work = Path(tmp)
        initrd = build_initrd(args.kernel_dir, work)
        results: dict[tuple[str, int], list[dict[str, float]]] = {}
        for _ in range(args.runs):  # alternate setups within each round
            for mtu in mtus:
                for setup in setups:
                    r = run_once(args, setup, mtu, initrd, work)
                    results.setdefault((setup, mtu), []).append(r)
                    print(
                        f"{setup:18} mtu {mtu:5} payload {int(r['payload']):5}: "
                        f"read {r['read']:6.1f} MB/s  write {r['write']:6.1f} MB/s  "
                        f"(target CPU {r['target_cpu']:.1f}s, guest I/O {r['io_time']:.1f}s, "
                        f"dropped {int(r['dropped'])})",
                        flush=True,
                    )
        print("medians:")
        for (setup, mtu), rs in results.items():
            print(
                f"{setup:18} mtu {mtu:5}: read {statistics.median(r['read'] for r in rs):6.1f} MB/s  "
                f"write {statistics.median(r['write'] for r in rs):6.1f} MB/s  ({len(rs)} runs)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
