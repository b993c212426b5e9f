#!/usr/bin/env python3
"""Benchmark the boot users wait for: QEMU start -> the root's init, per initrd flavour, compressor and path.

    .venv/bin/python bench/boot_speed_bench.py [--runs 5] [--flavour systemd --flavour shell]
        [--compress gzip --compress zstd] [--via direct --via pxe] [--accel tcg] [--json FILE]

For each flavour and compressor the example inventory's initrd is built twice into a scratch cache that
shares the kernel with the real one: cold (dracut runs) and cached (netbootgen finds it). Its size, the
archive's unpacked size and the largest files in it (netbootgen initrd inspect's reader: what dracut pulls in)
are printed. Then the machine boots with `boot-test` (busybox root on netbootgen's AoE target), --runs times
per flavour, compressor and path, in rounds that alternate the set-ups so that load from other jobs hits them
alike. Figures: the `init` stage (seconds since QEMU started), median with min-max, and the medians of the
stages before it. Goals (issue 10, TCG): PXE <= 15 s and direct <= 10 s with the systemd initrd; initrd
<= 8 MB shell-only, <= 12 MB systemd; cold build <= 8 s, cached <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from netbootgen.build import build
from netbootgen.cache import cache_dir
from netbootgen.emulate.boottest import BootTestOptions, boot_test
from netbootgen.emulate.qemu import guest_cpus
from netbootgen.inventory import load_inventory
from netbootgen.modules.cpio import read_initramfs
from netbootgen.modules.inspect import inspect_initrd

STAGES = ("firmware", "pxelinux", "kernel", "initrd", "aoe-discovered", "root-mounted", "init")
# Kernel clock (printk time) of the events that show where a boot's seconds go: the initramfs unpacking runs
# between the first two (asynchronously, beside the rest of the kernel's start).
KERNEL_EVENTS = {
    "unpack": r"Trying to unpack rootfs image as initramfs",
    "unpacked": r"Freeing initrd memory",
    "/init": r"Run /init as init process",
    "95aoe": r"95aoe: ",
    "aoe.ko": r"aoe: AoE v\d+ initialised",
    "disk": r"aoe: \S+ e\d+\.\d+ v\S+ has \d+ sectors",
    "mounted": r"EXT4-fs \(etherd!e[^)]*\): mounted",
}
GOALS = {("systemd", "pxe"): 15.0, ("systemd", "direct"): 10.0}
SIZE_GOALS_MB = {"systemd": 12.0, "shell": 8.0}


@dataclass
class Initrd:
    flavour: str
    compress: str
    size: int = 0
    unpacked: int = 0
    cold: float = 0.0
    cached: float = 0.0
    host_unpack: float = 0.0  # best of 3: decompress + parse the image on the host (netbootgen.modules.cpio)
    largest: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class Boots:
    flavour: str
    compress: str
    via: str
    runs: list[dict[str, float]] = field(default_factory=list)  # stage -> t
    kernel: list[dict[str, float]] = field(default_factory=list)  # kernel event -> printk time
    failures: int = 0


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def measure_build(flavour: str, compress: str, scratch: Path) -> Initrd:
    """Cold and cached build of the example's initrd in a scratch cache whose kernels are the real cache's."""
    inv = load_inventory(None)
    cache = scratch / f"cache-{flavour}-{compress}"
    cache.mkdir()
    (cache / "kernels").symlink_to(cache_dir() / "kernels")
    times = []
    for attempt in ("cold", "cached"):
        t = time.monotonic()
        res = build(inv, scratch / f"out-{flavour}-{compress}-{attempt}", cache, systemd=flavour == "systemd",
                    compress=compress)
        times.append(time.monotonic() - t)
    (p,) = res.profiles.values()
    report = inspect_initrd(p.initrd.path)
    files = [(e.size, name) for name, e in report.files.items() if e.is_file]
    data = p.initrd.path.read_bytes()
    unpack = []
    for _ in range(3):
        t = time.process_time()
        read_initramfs(data)
        unpack.append(time.process_time() - t)
    return Initrd(flavour, compress, p.initrd.size, sum(s for s, _ in files), times[0], times[1], min(unpack),
                  sorted(files, reverse=True)[:8])


def boot_once(b: Boots, accel: str, timeout: float) -> None:
    opts = BootTestOptions(via=b.via, accel=accel, systemd=b.flavour == "systemd", compress=b.compress,
                           stage_timeout=timeout)
    try:
        result = boot_test(load_inventory(None), opts, cache_dir(), lambda msg: None)
    except Exception as e:  # a failed boot is a figure too; the rounds go on
        b.failures += 1
        say(f"  FAILED: {b.flavour}/{b.compress}/{b.via}: {type(e).__name__}: {e}")
        return
    stages = {s.name: s.t for s in result.report.stages if s.t is not None}
    if not result.ok:
        b.failures += 1
        say(f"  FAILED: {b.flavour}/{b.compress}/{b.via}: {result.report.failure}")
        return
    b.runs.append(stages)
    k = kernel_events(result.report.console)
    b.kernel.append(k)
    say(f"  {b.flavour:<8} {b.compress:<5} {b.via:<7} init at {stages['init']:6.2f} s  " +
        " ".join(f"{k}={v:.1f}" for k, v in stages.items() if k != "init") + "  kernel clock: " +
        " ".join(f"{e}={t:.2f}" for e, t in k.items()))


def kernel_events(console: str) -> dict[str, float]:
    """The printk time of each KERNEL_EVENTS line (the last "mounted": after 95aoe's fsck)."""
    found: dict[str, float] = {}
    for key, pattern in KERNEL_EVENTS.items():
        times = [float(m[1]) for m in re.finditer(r"\[\s*([0-9]+\.[0-9]+)\] " + pattern, console)]
        if times:
            found[key] = times[-1] if key == "mounted" else times[0]
    return found


def write_json(path: Path, initrds: list[Initrd], boots: list[Boots]) -> None:
    path.write_text(json.dumps({
        "initrds": [i.__dict__ for i in initrds],
        "boots": [{"flavour": b.flavour, "compress": b.compress, "via": b.via, "runs": b.runs, "kernel": b.kernel,
                   "failures": b.failures} for b in boots],
    }, indent=2) + "\n")


def med(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):6.2f} ({min(values):.1f}-{max(values):.1f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--flavour", action="append", choices=["systemd", "shell"])
    ap.add_argument("--compress", action="append", choices=["gzip", "zstd", "xz", "lz4"])
    ap.add_argument("--via", action="append", choices=["direct", "pxe"])
    ap.add_argument("--accel", default="tcg", choices=["tcg", "kvm", "auto"])
    ap.add_argument("--stage-timeout", type=float, default=240)
    ap.add_argument("--no-builds", action="store_true", help="skip the cold/cached build measurement")
    ap.add_argument("--json", type=Path, help="write every figure here")
    ap.add_argument("--from-json", type=Path, help="print the tables of an earlier (or interrupted) run's --json")
    args = ap.parse_args()
    if args.from_json:
        data = json.loads(args.from_json.read_text())
        initrds = [Initrd(**{**i, "largest": [tuple(x) for x in i["largest"]]}) for i in data["initrds"]]
        boots = [Boots(**b) for b in data["boots"]]
        report(initrds, boots, args.accel, f"read from {args.from_json}", None)
        return 0
    flavours = args.flavour or ["systemd", "shell"]
    compressors = args.compress or ["gzip", "zstd"]
    vias = args.via or ["direct", "pxe"]

    initrds: list[Initrd] = []
    if not args.no_builds:
        scratch = Path(tempfile.mkdtemp(prefix="boot-speed-"))
        try:
            for fl in flavours:
                for c in compressors:
                    say(f"building the {fl} initrd with {c} (cold, then cached) ...")
                    initrds.append(measure_build(fl, c, scratch))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    boots = [Boots(fl, c, v) for fl in flavours for c in compressors for v in vias]
    for i in initrds:
        say(f"initrd {i.flavour}/{i.compress}: {i.size / 1e6:.1f} MB, cold {i.cold:.1f} s, cached {i.cached:.2f} s, "
            f"host unpack {i.host_unpack:.2f} s")
    for b in boots:  # build (or find) each initrd in the real cache once, before the timed rounds
        with tempfile.TemporaryDirectory(prefix="boot-speed-warm-") as warm:
            build(load_inventory(None), Path(warm), cache_dir(), systemd=b.flavour == "systemd", compress=b.compress)
    for r in range(args.runs):
        say(f"round {r + 1}/{args.runs}")
        for b in boots:
            boot_once(b, args.accel, args.stage_timeout)
            if args.json:  # after every boot, so that an interrupted run keeps its figures
                write_json(args.json, initrds, boots)

    report(initrds, boots, args.accel, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), guest_cpus())
    if args.json:
        write_json(args.json, initrds, boots)
    return 1 if any(b.failures for b in boots) else 0


def report(initrds: list[Initrd], boots: list[Boots], accel: str, when: str, cpus: int | None) -> None:
    """The tables; `cpus`: the guests' vCPUs (boot-test's default), None when not known (read from JSON)."""
    print(f"\ninitrds (example inventory, kernel from the cache; {when})")
    print(f"{'flavour':<8} {'compress':<8} {'size MB':>8} {'unpacked MB':>11} {'cold s':>7} {'cached s':>8} "
          f"{'host unpack s':>13}  goal")
    for i in initrds:
        goal = SIZE_GOALS_MB[i.flavour]
        print(f"{i.flavour:<8} {i.compress:<8} {i.size / 1e6:8.1f} {i.unpacked / 1e6:11.1f} {i.cold:7.1f} "
              f"{i.cached:8.2f} {i.host_unpack:13.2f}  <= {goal:g} MB: {'met' if i.size / 1e6 <= goal else 'missed'}")
    for i in initrds:
        if i.compress == initrds[0].compress:
            print(f"largest files, {i.flavour}: " + ", ".join(f"{n.rsplit('/', 1)[-1]} {s / 1e6:.1f}"
                                                              for s, n in i.largest))
    print(f"\nboots: QEMU start -> stage, seconds, median (min-max) of the runs (n), accel {accel}"
          + (f", {cpus} vCPUs" if cpus else ""))
    print(f"{'flavour':<8} {'compress':<8} {'via':<7} {'init':>18} " + " ".join(f"{s:>14}" for s in STAGES[:-1]))
    for b in boots:
        cols = [f"{statistics.median([r[s] for r in b.runs if s in r]):14.2f}"
                if any(s in r for r in b.runs) else f"{'-':>14}" for s in STAGES[:-1]]
        goal = GOALS.get((b.flavour, b.via))
        verdict = ""
        if goal and b.runs:
            met = statistics.median([r["init"] for r in b.runs]) <= goal
            verdict = f"  goal <= {goal:g} s: {'met' if met else 'missed'}"
        fails = f"  ({b.failures} failed)" if b.failures else ""
        print(f"{b.flavour:<8} {b.compress:<8} {b.via:<7} {med([r['init'] for r in b.runs]):>18} "
              + " ".join(cols) + f"  n={len(b.runs)}" + verdict + fails)
    print("\nkernel clock (printk time, s, median)")
    print(f"{'flavour':<8} {'compress':<8} {'via':<7} " + " ".join(f"{e:>9}" for e in KERNEL_EVENTS))
    for b in boots:
        cols = [statistics.median([k[e] for k in b.kernel if e in k]) if any(e in k for k in b.kernel) else None
                for e in KERNEL_EVENTS]
        unpack = [k["unpacked"] - k["unpack"] for k in b.kernel if "unpack" in k and "unpacked" in k]
        line = " ".join(f"{'-' if c is None else f'{c:.1f}':>9}" for c in cols)
        tail = f"   unpacking {statistics.median(unpack):.2f} s" if unpack else ""
        print(f"{b.flavour:<8} {b.compress:<8} {b.via:<7} {line}{tail}")


if __name__ == "__main__":
    sys.exit(main())
