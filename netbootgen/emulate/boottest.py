"""boot-test: fetch the kernel, render, build the initrd, serve the root over AoE, boot QEMU, report stages."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netbootgen.emulate.console import ConsoleReport, Stage, StageResult, follow
from netbootgen.emulate.qemu import QemuSpec, probe_kvm, qemu_argv
from netbootgen.emulate.rootfs import INIT_MARKER, make_rootfs, read_marker
from netbootgen.errors import InputError, NetbootgenError
from netbootgen.fleet import kernel_args, machine_mtu
from netbootgen.generate import render_inventory
from netbootgen.inventory import Export, Inventory, Machine
from netbootgen.kernel.fetch import KernelTree, profile_kernel
from netbootgen.modules.initrd import InitrdResult, InitrdSpec, build_initrd, remove_stale
from netbootgen.output import write_tree
from netbootgen.pxe.tftp import install_boot_files, install_pxelinux

TARGET_MAC = "02:00:00:00:ae:01"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BootTestOptions:
    machine: str | None = None
    via: str = "pxe"  # "pxe" or "direct"
    accel: str = "auto"  # "auto", "tcg" or "kvm"
    systemd: bool = True  # systemd initrd, or dracut's shell-only initrd
    stage_timeout: float = 180.0
    workdir: Path | None = None  # kept after the run; default: a temporary folder, removed


@dataclass
class BootTestResult:
    machine: str
    via: str
    accel: str
    report: ConsoleReport
    initrd: InitrdResult
    disk_marker: bool
    workdir: Path | None

    @property
    def ok(self) -> bool:
        return self.report.ok and self.disk_marker

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "machine": self.machine,
            "via": self.via,
            "stages": [{"name": s.name, "t": s.t, "ok": s.ok} for s in self.report.stages],
            "console_log": self.report.console.replace("\r", ""),
            "accel": self.accel,
            "failure": self.report.failure,
            "disk_marker": self.disk_marker,
            "seconds": self.report.seconds,
            "initrd": {
                "size": self.initrd.size,
                "build_seconds": round(self.initrd.seconds, 1),
                "cached": self.initrd.cached,
                "systemd": "-systemd-" in self.initrd.path.name,
            },
        }


def stages_for(via: str, ex: Export) -> list[Stage]:
    dev = re.escape(ex.target)
    stages = [
        Stage("firmware", re.compile(r"Booting from ROM"), source="bios"),
        Stage("pxelinux", re.compile(r"PXELINUX \d+\.\d+")),
        Stage("kernel", re.compile(r"Linux version \S+")),
        Stage("initrd", re.compile(r"95aoe: root on /dev/etherd/")),
        Stage("aoe-discovered", re.compile(dev + r" v[0-9a-f]+ has \d+ sectors")),
        Stage("root-mounted", re.compile(r"\(etherd!" + dev + r"(p\d+)?\): mounted filesystem")),
        Stage("init", re.compile(re.escape(INIT_MARKER))),
    ]
    return [s for s in stages if via == "pxe" or s.name != "pxelinux"]


def choose_accel(requested: str, kernel: KernelTree, cache: Path) -> str:
    if requested != "auto":
        return requested
    return "kvm" if probe_kvm(kernel.vmlinuz, cache) else "tcg"


class TargetProcess:
    """`netbootgen serve` in a child process, serving one export over a unix datagram socket."""

    def __init__(self, work: Path, image: Path, ex: Export, allow: list[str], mtu: int) -> None:
        self.target_sock = work / "target.sock"
        self.qemu_sock = work / "qemu.sock"
        self.log = work / "target.log"
        ready = work / "target.ready"
        argv = [
            sys.executable, "-m", "netbootgen", "serve",
            "--export", f"{ex.shelf}.{ex.slot}={image}",
            "--transport", f"unix-dgram:{self.target_sock}:{self.qemu_sock}",
            "--mac", TARGET_MAC,
            "--mtu", str(mtu),
            "--ready-file", os.fspath(ready),
            *[a for mac in allow for a in ("--mac-allow", mac)],
        ]  # fmt: skip
        self.logfile = self.log.open("w")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.logfile, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise NetbootgenError(f"the AoE target did not start:\n{self.log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logfile.close()
        return self.proc.returncode


def boot_test(inv: Inventory, opts: BootTestOptions, cache: Path, progress: Progress) -> BootTestResult:
    if opts.via not in ("pxe", "direct"):
        raise InputError(f"--via must be pxe or direct, not {opts.via!r}")
    if opts.machine is not None and opts.machine not in inv.machines:
        raise InputError(f"--machine: no machine named {opts.machine!r} (machines: {', '.join(inv.machines)})")
    m: Machine = inv.machine(opts.machine)
    ex = inv.exports[m.export]
    profile = inv.profiles[m.profile]
    t0 = time.monotonic()

    def say(msg: str) -> None:
        progress(f"[{time.monotonic() - t0:6.1f}s] {msg}")

    say(f"machine {m.name} ({m.macs[0]}), root {ex.target}, profile {profile.name}, via {opts.via}")
    kernel = profile_kernel(profile, cache)
    say(f"kernel {kernel.version} ready in {kernel.root}")
    files = render_inventory(inv)
    flavour = "systemd" if opts.systemd else "shell-only"
    say(f"building the {flavour} initrd with dracut and 95aoe (cached when nothing changed) ...")
    spec = InitrdSpec.for_profile(kernel, files, profile, systemd=opts.systemd)
    initrd = build_initrd(spec, cache)
    remove_stale(cache, initrd.path)
    say(f"initrd {initrd.path.name}: {initrd.size / 1e6:.1f} MB, "
        + ("cached" if initrd.cached else f"built in {initrd.seconds:.1f} s"))

    work = opts.workdir or Path(tempfile.mkdtemp(prefix="netbootgen-boot-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        write_tree(work / "render", files)
        tftp = work / "render" / "tftp"
        install_pxelinux(tftp)
        install_boot_files(tftp, profile.name, kernel.vmlinuz, initrd.path)
        image = make_rootfs(work / "root.img")
        say(f"root image {image} (busybox, ext4); starting the AoE target")
        mtu = machine_mtu(inv, m)
        target = TargetProcess(work, image, ex, list(m.macs), mtu)
        try:
            accel = choose_accel(opts.accel, kernel, cache)
            qspec = QemuSpec(
                mac=m.macs[0],
                qemu_sock=target.qemu_sock,
                target_sock=target.target_sock,
                bios_log=work / "bios.log",
                accel=accel,
                tftp_root=tftp if opts.via == "pxe" else None,
                kernel=kernel.vmlinuz if opts.via == "direct" else None,
                initrd=initrd.path if opts.via == "direct" else None,
                append=" ".join(kernel_args(inv, m)),
                host_mtu=mtu if mtu != 1500 else None,
            )
            say(f"booting QEMU ({accel}); console log {work / 'console.log'}")
            boot_start = time.monotonic() - t0

            def on_stage(r: StageResult) -> None:
                progress(f"[{boot_start + (r.t or 0):6.1f}s]   stage {r.name:<15} reached at {r.t:6.2f} s")

            report = follow(qemu_argv(qspec), stages_for(opts.via, ex), log_path=work / "console.log",
                            bios_log=qspec.bios_log, stage_timeout=opts.stage_timeout, progress=on_stage)
        finally:
            target.stop()
        marker = read_marker(image) is not None
        say("the guest's write reached the AoE disk" if marker else "no write from the guest found on the AoE disk")
        return BootTestResult(m.name, opts.via, accel, report, initrd, marker, work if opts.workdir else None)
    finally:
        if opts.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
