#!/usr/bin/env python3
"""Benchmark the netbootgen AoE target against vblade, with a Linux guest under QEMU (TCG, one vCPU).

The guest (netbootgen.testing.guest: busybox, virtio-net, aoe) discovers e1.2 and times `dd iflag=direct` reads
and `dd oflag=direct` writes of 1 MiB blocks with the guest's CLOCK_MONOTONIC in nanoseconds (the
"now at" line of /proc/timer_list; /proc/uptime only has 10 ms steps).

    python bench/aoe_qemu_bench.py --kernel-dir ~/.cache/netbootgen/kernels/6.1.0-56-amd64 \\
        --setup netbootgen-tap --setup vblade-tap --mtu 1500 --mtu 9000 --runs 3

Setups: netbootgen-dgram, netbootgen-stream, netbootgen-py-stream (unix sockets, no root); netbootgen-userns-tap
(a tap in a user namespace of its own, with the target and QEMU inside: no root either, see
netbootgen.testing.userns for why the unix sockets lose jumbo writes and the tap does not); netbootgen-tap,
netbootgen-py-tap (the -py- setups: `--hot-path python`, no C engine) and vblade-tap (the same tap device
path, needs root). Every setup serves the same image file; before each run the image is read once on the host
so that every run finds it in the page cache. Rounds alternate the setups. Each tool runs with its own default
bufcnt unless --bufcnt N is given (then both use N). Prints one line per run, then medians (with min-max), and
the ratio netbootgen/vblade per figure.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from netbootgen.aoe.process import ServeProcess
from netbootgen.emulate.qemu import dgram_netdev, qemu_argv, stream_netdev, tap_netdev
from netbootgen.run import need_binary, run, spawn
from netbootgen.testing.guest import build_initramfs, guest_spec
from netbootgen.testing.userns import UserNetns

SCRIPT = r"""
wait_dev /dev/etherd/e1.2 30 || { echo BENCH-FAIL no device; poweroff -f; }
for o in $(cat /proc/cmdline); do case $o in rmb=*) R=${o#rmb=};; wmb=*) W=${o#wmb=};; esac; done
echo "BENCH-PAYLOAD $(cat '/sys/block/etherd!e1.2/payload')"
idle() { set -- $(head -1 /proc/stat); echo $5; }
iowait() { set -- $(head -1 /proc/stat); echo $6; }
# Nanosecond clock (CLOCK_MONOTONIC, "now at N nsecs"): /proc/uptime only counts in 10 ms steps.
up() { set -- $(grep -m1 '^now at' /proc/timer_list); echo "$3"; }
# Interrupts of the NIC's receive and transmit queues (one vCPU: the count is the second field).
irq() { set -- $(grep "virtio0-$1" /proc/interrupts); echo "${2:-0}"; }
mark() { i=$(idle); w=$(iowait); rx=$(irq input); tx=$(irq output); }
mark; i0=$i; w0=$w; r0=$rx; x0=$tx; t0=$(up)
dd if=/dev/etherd/e1.2 of=/dev/null bs=1M count=$R iflag=direct 2>/dev/null
t1=$(up); mark
echo "BENCH-READ $R $t0 $t1 $((i - i0)) $((w - w0)) $((rx - r0)) $((tx - x0))"
mark; i0=$i; w0=$w; r0=$rx; x0=$tx; t0=$(up)
dd if=/dev/zero of=/dev/etherd/e1.2 bs=1M count=$W oflag=direct 2>/dev/null
t1=$(up); mark
echo "BENCH-WRITE $W $t0 $t1 $((i - i0)) $((w - w0)) $((rx - r0)) $((tx - x0))"
echo BENCH-DONE
poweroff -f
"""

SETUPS = ["netbootgen-dgram", "netbootgen-stream", "netbootgen-py-stream", "netbootgen-userns-tap", "netbootgen-tap",
          "netbootgen-py-tap", "vblade-tap"]
USERNS_TAP = "tap0"  # inside the user namespace of the netbootgen-userns-tap setup


def preread(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(1 << 20):
            pass


def run_once(args: argparse.Namespace, setup: str, mtu: int, initrd: Path, work: Path, disk: Path) -> dict[str, float]:
    tap = f"aoeb{uuid.uuid4().hex[:6]}"
    served: ServeProcess | None = None
    vblade: subprocess.Popen[bytes] | None = None
    target_log = ""
    text = ""
    bufcnt = ["--bufcnt", str(args.bufcnt)] if args.bufcnt else []
    userns: UserNetns | None = None
    inside: list[str] = []  # the command that runs the target and QEMU inside the user namespace
    if setup == "netbootgen-userns-tap":
        userns = UserNetns()
        userns.add_tap(USERNS_TAP, mtu)
        inside = userns.prefix
        netdev = tap_netdev(USERNS_TAP)
    elif setup.endswith("-tap"):
        run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"])
        run(["ip", "link", "set", tap, "mtu", str(mtu), "up"])
        netdev = tap_netdev(tap)
    elif setup == "netbootgen-dgram":
        netdev = dgram_netdev(work / "q.sock", work / "t.sock")
    else:
        netdev = stream_netdev(work / "s.sock")
    preread(disk)
    try:
        if setup == "vblade-tap":
            with open(work / "vblade.log", "wb") as vlog:
                vblade = spawn(["vblade", *(["-b", str(args.bufcnt)] if args.bufcnt else []), "1", "2", tap,
                                os.fspath(disk)], output=vlog)
            time.sleep(0.3)
        else:
            transport = {
                "netbootgen-dgram": f"unix-dgram:{work}/t.sock:{work}/q.sock",
                "netbootgen-stream": f"unix-stream:{work}/s.sock",
                "netbootgen-py-stream": f"unix-stream:{work}/s.sock",
                "netbootgen-userns-tap": f"iface:{USERNS_TAP}",
                "netbootgen-tap": f"iface:{tap}",
                "netbootgen-py-tap": f"iface:{tap}",
            }[setup]
            hot_path = ["--hot-path", "python"] if "-py-" in setup else []
            mtu_args = [] if setup.endswith("-tap") else ["--mtu", str(mtu)]
            served = ServeProcess(["--export", f"1.2={disk}", *bufcnt, "--transport", transport, *mtu_args,
                                   *hot_path], work / "target.log", prefix=inside)
        spec = guest_spec(args.qemu, args.kernel, initrd, netdev, mtu=mtu, memory_mib=512,
                          append=f"rmb={args.read_mb} wmb={args.write_mb}")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        text = run([*inside, *qemu_argv(spec)], check=False, timeout=args.timeout).stdout
    finally:
        mid = resource.getrusage(resource.RUSAGE_CHILDREN)
        if served is not None:
            served.stop()
            target_log = served.output()
        if vblade is not None:
            vblade.terminate()
            try:
                vblade.wait(10)
            except subprocess.TimeoutExpired:
                vblade.kill()
                vblade.wait()
            target_log = (work / "vblade.log").read_text(errors="replace")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if userns is not None:
            userns.close()
        elif setup.endswith("-tap"):
            run(["ip", "link", "del", tap], check=False)
    if "BENCH-DONE" not in text or "BENCH-FAIL" in text:
        raise RuntimeError(f"{setup} mtu {mtu}: guest failed:\n{text[-2000:]}\n{target_log}")
    m = re.search(r"dropped=(\d+)", target_log)
    res: dict[str, float] = {
        "target_cpu": (after.ru_utime - mid.ru_utime) + (after.ru_stime - mid.ru_stime),
        "qemu_cpu": (mid.ru_utime - before.ru_utime) + (mid.ru_stime - before.ru_stime),
        "io_time": 0.0,
        "dropped": float(m.group(1)) if m else 0.0,
    }
    m = re.search(r"e1\.2: frames=(\d+)", target_log)
    res["frames"] = float(m.group(1)) if m else 0.0
    for kind in ("READ", "WRITE"):
        m = re.search(rf"BENCH-{kind} (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", text)
        assert m, text
        mb, t0, t1 = int(m.group(1)), int(m.group(2)) / 1e9, int(m.group(3)) / 1e9  # nanoseconds
        res[kind.lower()] = mb * 1.048576 / max(t1 - t0, 1e-6)
        res["io_time"] += t1 - t0
        # Guest idle share while dd ran (USER_HZ = 100 ticks per second): time spent waiting for the target.
        res[f"{kind.lower()}_idle"] = min(1.0, int(m.group(4)) / 100 / max(t1 - t0, 0.01))
        # iowait: idle with dd blocked on the AoE device (waiting for the target's replies).
        res[f"{kind.lower()}_iowait"] = min(1.0, int(m.group(5)) / 100 / max(t1 - t0, 0.01))
        # NIC interrupts (receive, transmit queue) per MiB moved.
        res[f"{kind.lower()}_rx_irq"] = int(m.group(6)) / mb
        res[f"{kind.lower()}_tx_irq"] = int(m.group(7)) / mb
    m = re.search(r"BENCH-PAYLOAD (\d+)", text)
    res["payload"] = float(m.group(1)) if m else 0.0
    return res


def summary(results: dict[tuple[str, int], list[dict[str, float]]], mtus: list[int], setups: list[str]) -> str:
    lines = ["", "| setup | MTU | read MB/s median (min-max) | write MB/s median (min-max) | runs |"]
    lines.append("|---|---|---|---|---|")
    med: dict[tuple[str, int, str], float] = {}
    for mtu in mtus:
        for setup in setups:
            rs = results.get((setup, mtu), [])
            if not rs:
                continue
            cells = []
            for kind in ("read", "write"):
                vals = [r[kind] for r in rs]
                med[(setup, mtu, kind)] = statistics.median(vals)
                cells.append(f"{statistics.median(vals):6.1f} ({min(vals):.1f}-{max(vals):.1f})")
            lines.append(f"| {setup} | {mtu} | {cells[0]} | {cells[1]} | {len(rs)} |")
    if any(s == "vblade-tap" for s in setups):
        lines += ["", "| netbootgen/vblade-tap | MTU | read ratio | write ratio |", "|---|---|---|---|"]
        for mtu in mtus:
            for setup in setups:
                if setup == "vblade-tap" or (setup, mtu, "read") not in med or ("vblade-tap", mtu, "read") not in med:
                    continue
                ratios = [med[(setup, mtu, k)] / med[("vblade-tap", mtu, k)] for k in ("read", "write")]
                marks = ["" if r >= 1.0 else " (<1)" for r in ratios]
                lines.append(f"| {setup} | {mtu} | {ratios[0]:.2f}{marks[0]} | {ratios[1]:.2f}{marks[1]} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--kernel-dir", type=Path, required=True, help="extracted Debian linux-image (boot/, lib/modules/)"
    )
    ap.add_argument("--setup", action="append", choices=SETUPS)
    ap.add_argument("--mtu", action="append", type=int)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--read-mb", type=int, default=64)
    ap.add_argument("--write-mb", type=int, default=32)
    ap.add_argument("--bufcnt", type=int, default=None, help="same bufcnt for every target [default: each tool's]")
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    setups = args.setup or ["netbootgen-tap", "vblade-tap"]
    mtus = args.mtu or [1500, 9000]
    args.qemu = Path(args.qemu) if "/" in args.qemu else need_binary(args.qemu)
    args.kernel = next((args.kernel_dir / "boot").glob("vmlinuz-*"))
    moddir = next((args.kernel_dir / "lib/modules").iterdir())
    with tempfile.TemporaryDirectory(prefix="aoeb-") as tmp:
        work = Path(tmp)
        initrd = build_initramfs(moddir, SCRIPT, work / "initrd.gz")
        disk = work / "disk.img"
        with open(disk, "wb") as f:  # real (not sparse) data, the same file for every setup
            for _ in range(max(args.read_mb, args.write_mb) * 2):
                f.write(os.urandom(1 << 20))
        results: dict[tuple[str, int], list[dict[str, float]]] = {}
        for i in range(args.runs):  # alternate setups within each round, reversing the order every round
            for mtu in mtus:
                for setup in setups if i % 2 == 0 else setups[::-1]:
                    r = run_once(args, setup, mtu, initrd, work, disk)
                    results.setdefault((setup, mtu), []).append(r)
                    print(
                        f"{setup:18} mtu {mtu:5} payload {int(r['payload']):5}: "
                        f"read {r['read']:6.1f} MB/s  write {r['write']:6.1f} MB/s  "
                        f"(target CPU {r['target_cpu']:.1f}s, QEMU CPU {r['qemu_cpu']:.1f}s, "
                        f"guest I/O {r['io_time']:.1f}s, guest idle {r['read_idle']:.0%}/{r['write_idle']:.0%}, "
                        f"iowait {r['read_iowait']:.0%}/{r['write_iowait']:.0%}, "
                        f"rx/tx irqs per MiB {r['read_rx_irq']:.0f}+{r['read_tx_irq']:.0f}/"
                        f"{r['write_rx_irq']:.0f}+{r['write_tx_irq']:.0f}, "
                        f"frames {int(r['frames'])}, dropped {int(r['dropped'])})",
                        flush=True,
                    )
        print(summary(results, mtus, setups))
    return 0


if __name__ == "__main__":
    sys.exit(main())
