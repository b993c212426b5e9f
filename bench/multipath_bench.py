#!/usr/bin/env python3
"""Multipath benchmark: one `netbootgen serve` with one transport (`one`), with two and the guest on the first
only (`idle2`), with two paths used at once (`two`, a guest NIC on each), and with two paths after the second
link was cut (`cut`: QMP set_link net1 off, then one small write to make the initiator give up on that path,
which takes it 10-15 s, before the timed transfers); all unix-dgram, the same busybox guest (TCG, one vCPU).

    python bench/multipath_bench.py --runs 3 [--mtu 1500]

Each boot times `dd bs=64k` reads (iflag=direct) and writes (oflag=direct, from /dev/zero) of 8 MiB, three of
each, with the guest's nanosecond clock; rounds alternate the setups. Prints every transfer, then the median
(min-max) per setup and direction, and the requests each transport answered (the target's counters).
That the data survives a cut in the middle of a dd is integration/qemu/test_multipath.py's business.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from netbootgen.aoe.process import ServeProcess
from netbootgen.cache import cache_dir
from netbootgen.emulate.qemu import QEMU, dgram_netdev, qemu_argv, qmp_command
from netbootgen.kernel.fetch import fetch_kernel
from netbootgen.run import need_binary, spawn
from netbootgen.testing.guest import GUEST_MAC, build_initramfs, guest_mac, guest_spec

SETUPS = ("one", "idle2", "two", "cut")
SCRIPT = r"""
D=/dev/etherd/e1.2
ns() { set -- $(grep -m1 '^now at' /proc/timer_list); echo "$3"; }
wait_dev $D 30 || { echo BENCH-FAIL no device; poweroff -f; }
i=0
while [ "$(cat '/sys/block/etherd!e1.2/netif')" != "__NETIF__" ] && [ $i -lt 300 ]; do
    sleep 0.1; i=$((i + 1)); [ $((i % 10)) = 0 ] && echo > /dev/etherd/discover
done
echo "BENCH-NETIF $(cat '/sys/block/etherd!e1.2/netif')"
if [ __CUT__ = 1 ]; then
    echo BENCH-CUT-ME
    i=0; while [ "$(cat /sys/class/net/eth1/carrier)" = 1 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    t0=$(ns); dd if=/dev/zero of=$D bs=64k count=16 oflag=direct 2>/dev/null; t1=$(ns); echo "BENCH-FAILOVER $t0 $t1"
fi
for n in 1 2 3; do
    t0=$(ns); dd if=$D of=/dev/null bs=64k count=128 iflag=direct 2>/dev/null; t1=$(ns); echo "BENCH-READ $t0 $t1"
    t0=$(ns); dd if=/dev/zero of=$D bs=64k count=128 oflag=direct 2>/dev/null; t1=$(ns); echo "BENCH-WRITE $t0 $t1"
done
echo BENCH-DONE
poweroff -f
"""


def one_run(setup: str, work: Path, qemu: Path, kernel: Path, moddir: Path, mtu: int
            ) -> tuple[dict[str, list[float]], list[int], str]:
    """MiB/s per direction, requests per transport, and (cut) how long the failover write of 1 MiB took."""
    nics = 2 if setup in ("two", "cut") else 1
    transports = 1 if setup == "one" else 2
    script = SCRIPT.replace("__NETIF__", "eth0,eth1" if nics == 2 else "eth0")
    script = script.replace("__CUT__", "1" if setup == "cut" else "0")
    initrd = build_initramfs(moddir, script, work / f"initrd-{setup}.gz")
    socks = [(work / f"t{i}.sock", work / f"q{i}.sock") for i in range(transports)]
    args = ["--export", f"1.2={work / 'disk.img'}", "--mtu", str(mtu), "--mac-allow", GUEST_MAC,
            "--mac-allow", guest_mac(1)]
    for t, q in socks:
        args += ["--transport", f"unix-dgram:{t}:{q}"]
    netdevs = [dgram_netdev(q, t) for t, q in socks[:nics]]
    qmp = work / "qmp.sock"
    spec = guest_spec(qemu, kernel, initrd, netdevs[0], more_netdevs=netdevs[1:], mtu=mtu, qmp=qmp)
    console = work / "console.log"
    with ServeProcess(args, work / "target.log") as served, console.open("wb") as sink:
        proc = spawn(qemu_argv(spec), output=sink)
        deadline = time.monotonic() + 300
        cut = setup != "cut"
        while proc.poll() is None and time.monotonic() < deadline:
            if not cut and b"BENCH-CUT-ME" in console.read_bytes():
                qmp_command(qmp, "set_link", {"name": "net1", "up": False})
                cut = True
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    out = console.read_text(errors="replace")
    if "BENCH-DONE" not in out:
        sys.exit(f"{setup}: the guest did not finish:\n{out[-3000:]}")
    mib_s = {}
    for kind in ("READ", "WRITE"):
        mib_s[kind] = [8e9 / (int(b) - int(a)) for a, b in re.findall(rf"BENCH-{kind} (\d+) (\d+)", out)]
    requests = [int(n) for n in re.findall(r"requests=(\d+)", served.output())]
    requests = requests or [sum(int(n) for n in re.findall(r"frames=(\d+)", served.output()))]
    failover = re.search(r"BENCH-FAILOVER (\d+) (\d+)", out)
    note = f"; 1 MiB right after the cut took {(int(failover[2]) - int(failover[1])) / 1e9:.1f} s" if failover else ""
    return mib_s, requests, note


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mtu", type=int, default=1500)
    opts = ap.parse_args()
    kernel = fetch_kernel("auto", cache_dir())
    qemu = need_binary(QEMU)
    results: dict[str, dict[str, list[float]]] = {s: {"READ": [], "WRITE": []} for s in SETUPS}
    with tempfile.TemporaryDirectory(prefix="mpb-") as tmp:
        work = Path(tmp)
        (work / "disk.img").write_bytes(os.urandom(32 << 20))
        for r in range(opts.runs):
            for setup in SETUPS:
                mib_s, requests, note = one_run(setup, work, qemu, kernel.vmlinuz, kernel.moddir, opts.mtu)
                for kind, values in mib_s.items():
                    results[setup][kind] += values
                print(f"run {r + 1} {setup:5}: read {' '.join(f'{v:5.1f}' for v in mib_s['READ'])}  "
                      f"write {' '.join(f'{v:5.1f}' for v in mib_s['WRITE'])} MiB/s; requests per transport "
                      f"{'/'.join(map(str, requests))}{note}", flush=True)
    print(f"\nmedian (min-max) MiB/s of {opts.runs * 3} transfers of 8 MiB, MTU {opts.mtu}:")
    for setup in SETUPS:
        cells = []
        for kind in ("READ", "WRITE"):
            v = results[setup][kind]
            cells.append(f"{kind.lower()} {statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})")
        print(f"  {setup:5}  " + "   ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
