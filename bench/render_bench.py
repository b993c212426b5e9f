"""Benchmark: render a 10,000-machine inventory into a fresh folder, then again with nothing changed.

    .venv/bin/python bench/render_bench.py [--machines N] [--runs N] [--keep DIR | --tmpdir DIR] [--profile]

Each measured render (load_inventory + render_inventory + write_tree) runs in a fresh subprocess:
- time is its wall time, best of --runs renders into fresh folders (the median is shown too: file creation
  speed on a shared VM varies a lot from run to run);
- memory is that process's peak resident set size, resource.getrusage(RUSAGE_SELF).ru_maxrss read in the
  child at the end (so it includes the interpreter and the imports, about 20 MB).
Then the last tree is rendered again from the same inventory: no file may be rewritten.
Goal: <= 2 s and <= 200 MB for 10,000 machines, 0 rewritten. Exit status 1 when the goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GOAL_SECONDS = 2.0
GOAL_MB = 200


def inventory_text(machines: int) -> str:
    """A fleet: 4 profiles, 3 servers (one jumbo), one writable export per machine except every 7th, which
    boots a read-only image shared by 10 machines (vblade's -m list holds at most 32 MACs); every 10th
    machine has two NICs, every 5th has jumbo frames, every 4th extra kernel arguments."""
    out = ['[defaults]\nprofile = "virtio"\nserial_console = "ttyS0,115200"\n']
    out.append('[profiles.virtio]\nnic_drivers = { virtio_net = "m" }\n')
    out.append('[profiles.intel]\nkernel_version = "6.1.0-56-amd64"\nnic_drivers = { e1000e = "y", igb = "m" }\n'
               'aoe = "y"\nconfig = { CONFIG_IKCONFIG = "y", CONFIG_LOCALVERSION = "\\"-aoe\\"" }\n')
    out.append('[profiles.broadcom]\nnic_drivers = { tg3 = "m", bnxt_en = "m" }\n')
    out.append('[profiles.mellanox]\nnic_drivers = { mlx5_core = "m" }\n')
    out.append('[servers.store1]\ninterface = "eth0"\n')
    out.append('[servers.store2]\ninterface = "eth1"\n')
    out.append('[servers.jumbo]\ninterface = "enp3s0"\nmtu = 9000\n')
    profiles = ["virtio", "intel", "broadcom", "mellanox"]
    servers = ["store1", "store2", "jumbo"]
    for i in range(machines):
        name = f"node{i:05d}"
        jumbo = i % 5 == 0
        if i % 7 == 0:
            n = i // 70
            export = f"ro-{n}"
            if i % 70 == 0:
                out.append(f'[exports.{export}]\nserver = "{servers[n % 2]}"\n'
                           f'shelf = {60000 + n // 255}\nslot = {n % 255}\n'
                           f'path = "/srv/aoe/ro-{n}.img"\nreadonly = true\n')
        else:
            export = f"root-{name}"
            server = "jumbo" if jumbo else servers[i % 2]
            out.append(f'[exports.{export}]\nserver = "{server}"\nshelf = {i // 255}\nslot = {i % 255}\n'
                       f'path = "/srv/aoe/{name}.img"\nsync = {"true" if i % 3 == 0 else "false"}\n')
        macs = [f"52:54:{i >> 16 & 0xff:02x}:{i >> 8 & 0xff:02x}:{i & 0xff:02x}:01"]
        if i % 10 == 0:
            macs.append(f"52:54:{i >> 16 & 0xff:02x}:{i >> 8 & 0xff:02x}:{i & 0xff:02x}:02")
        lines = [f"[machines.{name}]", f"macs = {json.dumps(macs)}", f'export = "{export}"',
                 f'profile = "{profiles[i % len(profiles)]}"']
        if jumbo:
            lines.append("mtu = 9000")
        if i % 4 == 0:
            lines.append('kernel_args = ["quiet", "loglevel=3"]')
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def child(inventory: Path, out: Path, profile: bool) -> None:
    """Runs in the measured subprocess: prints one JSON line of figures."""
    import resource

    from netbootgen.generate import render_inventory
    from netbootgen.inventory import load_inventory
    from netbootgen.output import WriteReport, write_tree

    phases: dict[str, float] = {}

    def work() -> tuple[int, WriteReport]:
        t = time.perf_counter()
        inv = load_inventory(inventory)
        phases["load"] = time.perf_counter() - t
        t = time.perf_counter()
        files = render_inventory(inv)
        phases["render"] = time.perf_counter() - t
        t = time.perf_counter()
        report = write_tree(out, files)
        phases["write"] = time.perf_counter() - t
        return len(files), report

    t0 = time.perf_counter()
    if profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        nfiles, report = prof.runcall(work)
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
    else:
        nfiles, report = work()
    seconds = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "seconds": seconds,
        "rss_mb": usage.ru_maxrss / 1024,  # ru_maxrss is in KiB on Linux
        "files": nfiles,
        "phases": phases,
        "written": len(report.written),
        "unchanged": len(report.unchanged),
    }))


def measure(inventory: Path, out: Path, profile: bool) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", os.fspath(inventory), os.fspath(out)]
    if profile:
        cmd.append("--profile")
    os.sync()  # so that the writeback of earlier steps (the inventory, a removed tree) is not charged to this one
    res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if res.returncode != 0:
        raise SystemExit(f"the measured render failed (exit status {res.returncode}); see above")
    return json.loads(res.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def phases(r: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.2f} s" for k, v in r["phases"].items())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--machines", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3, help="Fresh renders to time (best and median are shown).")
    ap.add_argument("--keep", type=Path, help="Work in this (empty or new) folder and keep it.")
    ap.add_argument("--tmpdir", type=Path, help="Make the temporary work folder in TMPDIR (e.g. /dev/shm to time "
                                                "the program without the disk).")
    ap.add_argument("--profile", action="store_true", help="Print a cProfile of each render to stderr.")
    ap.add_argument("--child", nargs=2, type=Path, metavar=("INVENTORY", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child, profile=args.profile)
        return 0

    with tempfile.TemporaryDirectory(prefix="netbootgen-bench-", dir=args.tmpdir) as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if any(work.iterdir()):
            raise SystemExit(f"{work} is not empty")
        inventory = work / "fleet.toml"
        inventory.write_text(inventory_text(args.machines))
        out = work / "out"
        fresh = []
        for _ in range(max(1, args.runs)):
            if out.exists():
                shutil.rmtree(out)
            fresh.append(measure(inventory, out, args.profile))
        again = measure(inventory, out, args.profile)
    best = min(fresh, key=lambda r: r["seconds"])
    median = statistics.median(r["seconds"] for r in fresh)
    rss = max(r["rss_mb"] for r in [*fresh, again])
    ok = best["seconds"] <= GOAL_SECONDS and rss <= GOAL_MB and again["written"] == 0
    print(f"render {args.machines} machines: {best['seconds']:.2f} s (best of {len(fresh)}; median {median:.2f} s), "
          f"peak RSS {rss:.0f} MB, {best['files']} files; "
          f"re-render: {again['written']} rewritten ({again['seconds']:.2f} s)")
    print(f"  best render: {phases(best)}")
    print(f"  re-render:   {phases(again)}")
    print(f"goal (<= {GOAL_SECONDS:g} s, <= {GOAL_MB} MB, 0 rewritten): {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
