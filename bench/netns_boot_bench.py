#!/usr/bin/env python3
"""Stage times of boots on the real network (boot-test --network netns: bridge, dnsmasq, AF_PACKET target, tap)
against QEMU's slirp (its DHCP/TFTP beside the AoE socket), for SeaBIOS (PXELINUX) and OVMF (GRUB).

    sudo .venv/bin/python bench/netns_boot_bench.py [--runs 3] [--firmware bios --firmware uefi] [--accel tcg]

The example inventory's machine boots with boot-test (busybox root on `netbootgen serve`), --runs times per
network and firmware, in rounds that alternate the set-ups so that load from other jobs hits them alike.
Prints each run's stages (seconds since QEMU started), then per set-up the median of each stage.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from netbootgen.cache import cache_dir
from netbootgen.emulate.boottest import BootTestOptions, boot_test
from netbootgen.inventory import load_inventory

NETWORKS = ("slirp", "netns")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--firmware", action="append", choices=["bios", "uefi"])
    ap.add_argument("--accel", default="tcg", choices=["tcg", "kvm", "auto"])
    ap.add_argument("--stage-timeout", type=float, default=180.0)
    args = ap.parse_args()
    firmwares = args.firmware or ["bios", "uefi"]
    inv = load_inventory(None)
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for run in range(1, args.runs + 1):
        for fw in firmwares:
            for net in NETWORKS:
                opts = BootTestOptions(accel=args.accel, network=net, firmware=fw, stage_timeout=args.stage_timeout)
                res = boot_test(inv, opts, cache_dir(), lambda msg: None)
                stages = {s.name: s.t for s in res.report.stages if s.t is not None}
                print(f"run {run} {fw:<4} {net:<5} ok={res.ok} " + " ".join(f"{k}={v:.1f}" for k, v in stages.items()),
                      flush=True)
                if res.ok:
                    results.setdefault((fw, net), []).append(stages)
    print("\nmedian stage times (s since QEMU started):")
    for (fw, net), runs in sorted(results.items()):
        names = list(runs[0])
        med = {n: statistics.median(r[n] for r in runs) for n in names}
        print(f"  {fw:<4} {net:<5} ({len(runs)} runs): " + "  ".join(f"{n} {v:.1f}" for n, v in med.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
