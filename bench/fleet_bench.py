#!/usr/bin/env python3
"""What booting a fleet at once buys: 4 machines booted concurrently (boot-test --all --jobs 4) against the same
4 booted one after another (--jobs 1), through the same harness and one AoE target.

    .venv/bin/python bench/fleet_bench.py [--machines 4] [--rounds 1] [--via pxe] [--accel tcg] [--jobs N ...]

The inventory: N machines of the virtio profile (the fetched kernel), each on its own writable export, on one
server; busybox roots, each guest with its proofs (emulate/fleetboot.py). Rounds alternate the two ways so
that load from other jobs hits them alike. Prints each run's wall time (first guest started to last guest
done) and per-machine seconds and stage times (since that guest's QEMU started), then per way: the median
wall time, the median over machines of each stage, and the ratio sequential / concurrent wall time.
`--jobs N` (repeatable) boots with these --jobs values instead of N = machines and 1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from netbootgen.cache import cache_dir
from netbootgen.emulate.boottest import BootTestOptions
from netbootgen.emulate.fleetboot import FleetOptions, boot_fleet
from netbootgen.inventory import load_inventory


def inventory_text(n: int) -> str:
    parts = ['[defaults]\nprofile = "virtio"\nserial_console = "ttyS0,115200"\n',
             '[profiles.virtio]\nkernel_version = "auto"\nnic_drivers = { virtio_net = "m" }\naoe = "m"\n',
             '[servers.store1]\ninterface = "eth0"\n']
    for i in range(1, n + 1):
        parts.append(f'[exports.root-node{i}]\nserver = "store1"\nshelf = 0\nslot = {i}\n'
                     f'path = "/srv/aoe/node{i}.img"\n')
        parts.append(f'[machines.node{i}]\nmacs = ["52:54:00:00:10:{i:02x}"]\nexport = "root-node{i}"\n')
    return "\n".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--machines", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--via", default="pxe", choices=["pxe", "direct"])
    ap.add_argument("--accel", default="tcg", choices=["tcg", "kvm", "auto"])
    ap.add_argument("--stage-timeout", type=float, default=300.0)
    ap.add_argument("--jobs", type=int, action="append")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        path = Path(tmp) / "fleet.toml"
        path.write_text(inventory_text(args.machines))
        inv = load_inventory(path)
    boot = BootTestOptions(via=args.via, accel=args.accel, stage_timeout=args.stage_timeout)
    ways = {"concurrent": args.machines, "sequential": 1}
    if args.jobs:
        ways = {("sequential" if j == 1 else f"jobs {j}"): j for j in args.jobs}
    walls: dict[str, list[float]] = {w: [] for w in ways}
    stages: dict[str, dict[str, list[float]]] = {w: {} for w in ways}
    totals: dict[str, list[float]] = {w: [] for w in ways}
    print(f"{args.machines} machines, via {args.via}, accel {args.accel}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    for rnd in range(1, args.rounds + 1):
        order = list(ways) if rnd % 2 else list(reversed(ways))
        for way in order:
            fleet = boot_fleet(inv, FleetOptions((), ways[way], boot), cache_dir(), lambda msg: None)
            print(f"round {rnd} {way:<10} (--jobs {ways[way]}): ok={fleet.ok} wall {fleet.seconds:.1f} s, "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
            for run in fleet.runs:
                st = {s.name: s.t for s in run.result.report.stages if s.t is not None}
                print(f"    {run.result.machine} ok={run.ok} {run.result.report.seconds:.1f} s: "
                      + " ".join(f"{k}={v:.1f}" for k, v in st.items()), flush=True)
                if run.ok:
                    totals[way].append(run.result.report.seconds)
                    for k, v in st.items():
                        stages[way].setdefault(k, []).append(v)
            if fleet.ok:
                walls[way].append(fleet.seconds)
    print("\nmedians (per machine: seconds since its QEMU started):")
    for way in ways:
        if not walls[way]:
            print(f"  {way}: no run where every machine booted")
            continue
        med = "  ".join(f"{k} {statistics.median(v):.1f}" for k, v in stages[way].items())
        print(f"  {way:<10} wall {statistics.median(walls[way]):.1f} s, per machine "
              f"{statistics.median(totals[way]):.1f} s; stages: {med}")
    for way in ways:
        if way != "sequential" and walls.get(way) and walls.get("sequential"):
            ratio = statistics.median(walls["sequential"]) / statistics.median(walls[way])
            print(f"  sequential / {way} wall time: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
