"""Benchmark: `netbootgen image build` cold (warm apt cache) and cached, the image's size on disk, and the
Debian root booted under QEMU from the AoE target to multi-user.target (direct, median of --runs; PXE once).

    .venv/bin/python bench/image_bench.py [--runs 3] [--pxe-runs 1] [--accel tcg] [--json FILE]

Cold: a fresh netbootgen cache whose apt/archives is the shared cache's (the packages are there, mmdebstrap
still runs, installs and the image is written); cached: the same command again. Both are the CLI's wall time.
Boots are `netbootgen boot-test --root debian`; the figure is the multi-user stage's t (seconds since QEMU
started), and the run must pass (clean poweroff, host-side checks). Goals: cold <= 60 s, cached <= 2 s,
<= 400 MB on disk, direct -> multi-user <= 30 s under TCG. Exit status 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from netbootgen.cache import cache_dir

GOALS = {"cold_s": 60.0, "cached_s": 2.0, "disk_mb": 400.0, "direct_multi_user_s": 30.0}


def netbootgen(*args: str, env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "netbootgen", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL, timeout=3600)
    return time.monotonic() - start, proc


def image_build(tmp: Path) -> dict[str, Any]:
    cache = tmp / "cache"
    (cache / "apt").mkdir(parents=True)
    (cache / "apt" / "archives").symlink_to(cache_dir() / "apt" / "archives")
    env = {"NETBOOTGEN_CACHE": os.fspath(cache)}
    cold, proc = netbootgen("image", "build", env=env)
    if proc.returncode != 0:
        raise SystemExit(f"image build failed:\n{proc.stdout}{proc.stderr}")
    cached, proc = netbootgen("image", "build", env=env)
    image = next((cache / "image").glob("debian-*.img"))
    st = image.stat()
    return {"cold_s": round(cold, 1), "cached_s": round(cached, 2), "disk_mb": round(st.st_blocks * 512 / 1e6),
            "size_mb": round(st.st_size / 1e6)}


def boot(tmp: Path, via: str, accel: str) -> dict[str, float]:
    report = tmp / f"boot-{via}-{time.monotonic_ns()}.json"
    _, proc = netbootgen("boot-test", "--root", "debian", "--via", via, "--accel", accel, "--json",
                         os.fspath(report), "--stage-timeout", "300")
    rep = json.loads(report.read_text())
    if proc.returncode != 0:
        raise SystemExit(f"boot-test --via {via} failed: {rep.get('failure')}\n{proc.stdout}{proc.stderr}")
    return {s["name"]: s["t"] for s in rep["stages"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="direct boots (the median is reported)")
    ap.add_argument("--pxe-runs", type=int, default=1)
    ap.add_argument("--accel", default="tcg")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="image-bench-") as t:
        tmp = Path(t)
        fig: dict[str, Any] = image_build(tmp)
        print(f"image build: cold {fig['cold_s']} s, cached {fig['cached_s']} s; image {fig['size_mb']} MB, "
              f"{fig['disk_mb']} MB on disk", flush=True)
        boots = {"direct": [boot(tmp, "direct", args.accel) for _ in range(args.runs)],
                 "pxe": [boot(tmp, "pxe", args.accel) for _ in range(args.pxe_runs)]}
    for via, runs in boots.items():
        if not runs:
            continue
        names = list(runs[0])
        med = {n: statistics.median(r[n] for r in runs) for n in names}
        fig[f"{via}_stages"] = med
        fig[f"{via}_multi_user_runs"] = [r["multi-user"] for r in runs]
        print(f"{via} ({len(runs)} run(s), median s since QEMU started): "
              + ", ".join(f"{n} {med[n]:.1f}" for n in names), flush=True)
    fig["direct_multi_user_s"] = fig["direct_stages"]["multi-user"] if boots["direct"] else None
    missed = [k for k, goal in GOALS.items() if fig.get(k) is not None and fig[k] > goal]
    print("goals missed: " + ", ".join(f"{k} {fig[k]} > {GOALS[k]}" for k in missed) if missed else "all goals met")
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2) + "\n")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
