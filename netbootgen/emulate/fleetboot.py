"""boot-test for several machines at once (`boot-test --all`, `--machine A --machine B`).

Each profile's kernel and initrd are built once (netbootgen.build), each export used by the machines gets its
own busybox root image (tagged with the export's name, at the export's offset/length), and ONE `netbootgen serve`
child (aoe/process.ServeProcess) serves them all on one unix-stream socket, each export answering only its
allow-list (the inventory's: the MACs of the machines that boot from it). The guests boot concurrently, at
most `jobs` at a time, each QEMU named after its machine (-name) and connected to that socket (-netdev
stream); machines sharing an export (the read-only kiosk image of the golden fleet) boot from it together.

Every guest proves what it got (`prove`, a pure function):
- its identity: the machine name QEMU gives it as its SMBIOS serial, printed on its console;
- its export: the tag of the root image it mounted (the export's name), printed on its console, and, on a
  writable export, its name written to its root: the host finds each name in that machine's image only;
- its PXELINUX file: its /proc/cmdline, printed between markers, equals what the `current` entry of
  pxelinux.cfg/01-<mac> in the built TFTP tree gives (`BOOT_IMAGE=LINUX APPEND initrd=INITRD`), or the
  machine's kernel arguments with --via direct.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netbootgen.aoe.process import ServeProcess
from netbootgen.build import BuildResult, build
from netbootgen.emulate.boottest import TARGET_MAC, BootTestOptions, BootTestResult, Progress, choose_accel, stages_for
from netbootgen.emulate.console import StageResult, follow
from netbootgen.emulate.derived import raw_initrd
from netbootgen.emulate.qemu import QEMU, QemuSpec, boot_kernel, check_accel, qemu_argv, stream_netdev
from netbootgen.emulate.rootfs import CMDLINE_BEGIN, CMDLINE_END, IDENTITY_MARKER, make_rootfs, read_marker
from netbootgen.errors import InputError
from netbootgen.fleet import allowed_macs, kernel_args, machine_mtu
from netbootgen.inventory import Export, Inventory, Machine
from netbootgen.pxe.menu import PXE_DIR, pxe_filename
from netbootgen.run import need_binary

FLEET_SOCK = "aoe.sock"
_IDENTITY = re.compile(re.escape(IDENTITY_MARKER) + r" machine=(\S*) root=(\S*)")
_CMDLINE = re.compile(re.escape(CMDLINE_BEGIN) + r"\n(.*?)\n" + re.escape(CMDLINE_END), re.S)


@dataclass(frozen=True)
class FleetOptions:
    machines: tuple[str, ...] = ()  # the machines to boot, in this order; empty: every machine of the inventory
    jobs: int = os.cpu_count() or 1  # guests running at once
    boot: BootTestOptions = BootTestOptions()  # via, accel, initrd flavour, dracut, compress, stage timeout, workdir


# -- the proofs (pure) -----------------------------------------------------------------------------------------


def console_identity(console: str) -> tuple[str, str] | None:
    """(machine, root tag) the guest printed: its SMBIOS serial and the tag of the root it mounted."""
    m = _IDENTITY.search(console.replace("\r", ""))
    return (m.group(1), m.group(2)) if m else None


def console_cmdline(console: str) -> str | None:
    """The guest's /proc/cmdline, printed between CMDLINE_BEGIN and CMDLINE_END."""
    m = _CMDLINE.search(console.replace("\r", ""))
    return " ".join(m.group(1).split()) if m else None


def marker_machine(marker: str | None) -> str | None:
    """The machine name in the marker file the guest wrote to its root (the `machine NAME` line)."""
    for line in (marker or "").splitlines():
        if line.startswith("machine "):
            return line[len("machine ") :].strip() or None
    return None


def pxe_entry(text: str, label: str = "current") -> dict[str, str]:
    """LINUX, INITRD and APPEND of `label` in a PXELINUX file ({} if there is no such label)."""
    found: dict[str, str] = {}
    current = None
    for raw in text.splitlines():
        key, _, value = raw.strip().partition(" ")
        key = key.upper()
        if key == "LABEL":
            current = value.strip()
        elif current == label and key in ("LINUX", "KERNEL", "INITRD", "APPEND"):
            found["LINUX" if key == "KERNEL" else key] = value.strip()
    return found


def pxe_cmdline(entry: dict[str, str]) -> str:
    """The /proc/cmdline PXELINUX gives a Linux entry: BOOT_IMAGE=LINUX, APPEND, initrd=INITRD."""
    words = [f"BOOT_IMAGE={entry.get('LINUX', '')}", *entry.get("APPEND", "").split()]
    if "INITRD" in entry:
        words.append(f"initrd={entry['INITRD']}")
    return " ".join(words)


@dataclass(frozen=True)
class Evidence:
    """What one guest showed: on its console, and (writable exports) in the images afterwards."""

    machine: str
    export: str
    readonly: bool
    console: str
    expected_cmdline: str  # from the built pxelinux.cfg/01-<mac> (or the kernel arguments with --via direct)
    expected_from: str  # where expected_cmdline comes from, for the message


def prove(ev: Evidence, image_names: dict[str, str | None]) -> list[str]:
    """What is wrong with what the guest got ([] when it got its own identity, export and PXELINUX file).

    `image_names`: each writable export's image -> the machine name found in it afterwards (None: none)."""
    problems = []
    ident = console_identity(ev.console)
    if ident is None:
        problems.append(f"no {IDENTITY_MARKER} line on the console")
    else:
        name, tag = ident
        if name != ev.machine:
            problems.append(f"the guest says it is machine {name or '(none)'!r}, not {ev.machine!r}")
        if tag != ev.export:
            problems.append(f"it mounted the root image of export {tag or '(none)'!r}, not {ev.export!r}")
    if not ev.readonly:
        found = image_names.get(ev.export)
        if found != ev.machine:
            problems.append(f"the image of export {ev.export!r} holds {found or 'no'!r} machine name, not "
                            f"{ev.machine!r}")
        elsewhere = sorted(e for e, n in image_names.items() if n == ev.machine and e != ev.export)
        if elsewhere:
            problems.append(f"its name is in the image of export {', '.join(elsewhere)}")
    seen = console_cmdline(ev.console)
    if seen is None:
        problems.append("no /proc/cmdline between the console markers")
    elif seen.split() != ev.expected_cmdline.split():
        problems.append(f"/proc/cmdline {seen!r} is not {ev.expected_from}'s {ev.expected_cmdline!r}")
    return problems


# -- the runs --------------------------------------------------------------------------------------------------


@dataclass
class MachineRun:
    result: BootTestResult
    evidence: Evidence
    problems: list[str] = field(default_factory=list)
    started: float = 0.0  # s after the first guest started (a guest waits for a free job)
    image_name: str | None = None  # the machine name found in its export's image (writable exports)

    @property
    def ok(self) -> bool:
        return self.result.report.ok and not self.problems

    @property
    def failed_stage(self) -> str | None:
        """The first stage not reached, 'proof' when they all were but a proof failed, None when ok."""
        stage = next((s.name for s in self.result.report.stages if not s.ok), None)
        return stage or (None if self.ok else "proof")

    def to_json(self) -> dict[str, Any]:
        data = self.result.to_json()
        ident = console_identity(self.evidence.console)
        data.update({
            "ok": self.ok,
            "outcome": "booted" if self.ok else "failed",
            "failed_stage": self.failed_stage,
            "last_lines": self.result.report.last_lines() if not self.ok else "",
            "started": round(self.started, 2),
            "export": self.evidence.export,
            "readonly": self.evidence.readonly,
            "disk_marker": None if self.evidence.readonly else self.result.disk_marker,
            "proof": {
                "problems": self.problems,
                "console_machine": ident[0] if ident else None,
                "console_root": ident[1] if ident else None,
                "image_machine": self.image_name,
                "cmdline": console_cmdline(self.evidence.console),
                "expected_cmdline": self.evidence.expected_cmdline,
                "expected_from": self.evidence.expected_from,
            },
        })  # fmt: skip
        return data


@dataclass
class FleetResult:
    runs: list[MachineRun]
    via: str
    accel: str
    jobs: int
    seconds: float  # wall time of the boots (from the first guest's start to the last one's end)
    workdir: Path | None

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.runs)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "fleet": True, "via": self.via, "accel": self.accel, "jobs": self.jobs,
                "seconds": round(self.seconds, 2), "machines": [r.to_json() for r in self.runs]}


def select_machines(inv: Inventory, names: tuple[str, ...]) -> list[Machine]:
    """The machines named (every machine when none is), each once; an unknown name or a machine without a serial
    console (boot-test follows the guest's serial console) is an InputError."""
    for name in names:
        if name not in inv.machines:
            raise InputError(f"--machine: no machine named {name!r} (machines: {', '.join(inv.machines)})")
    chosen = [inv.machines[n] for n in dict.fromkeys(names)] if names else list(inv.machines.values())
    silent = [m.name for m in chosen if not (m.serial_console or "").startswith("ttyS0")]
    if silent:
        shown = [f"machines.{n}.serial_console ({inv.machines[n].serial_console or 'none'})" for n in silent]
        raise InputError(f"boot-test follows the guest's first serial port: {', '.join(shown)} must be ttyS0")
    return chosen


def check_fleet_options(opts: FleetOptions) -> None:
    b = opts.boot
    if opts.jobs < 1:
        raise InputError(f"--jobs must be at least 1, not {opts.jobs}")
    if b.via not in ("pxe", "direct"):
        raise InputError(f"--via must be pxe or direct, not {b.via!r}")
    if b.accel not in ("auto", "tcg", "kvm"):
        raise InputError(f"--accel must be auto, tcg or kvm, not {b.accel!r}")
    check_accel(b.accel)
    one_machine = [("--network", b.network != "slirp"), ("--firmware", b.firmware != "bios"),
                   ("--root", b.root != "busybox"), ("--root-image", b.root_image is not None),
                   ("--persist", b.persist), ("initrd_path", b.initrd_path is not None),
                   ("kernel_args", b.kernel_args is not None), ("serve_extra", bool(b.serve_extra)),
                   ("target_plan", b.target_plan is not None), ("--entry", b.entry != "current"),
                   ("--mac", b.mac is not None)]  # fmt: skip
    for option, given in one_machine:
        if given:
            raise InputError(f"{option} is for one machine: several machines boot with the defaults (--network "
                             "slirp, --firmware bios, --root busybox, --entry current, their own MACs)")


def export_args(inv: Inventory, ex: Export, image: Path) -> list[str]:
    """`netbootgen serve --export` for `ex` on `image`: its window, read-only flag and the inventory's
    allow-list (allow=MAC+MAC)."""
    value = f"{ex.shelf}.{ex.slot}={image}" + (",ro" if ex.readonly else "")
    value += (f",offset={ex.offset}" if ex.offset else "") + (f",length={ex.length}" if ex.length else "")
    return ["--export", value + ",allow=" + "+".join(allowed_macs(inv, ex))]


def expected_cmdline(inv: Inventory, m: Machine, via: str, tftp: Path) -> tuple[str, str]:
    """(the /proc/cmdline the machine must see, where that comes from)."""
    if via == "direct":
        return " ".join(kernel_args(inv, m)), "the machine's kernel arguments"
    name = pxe_filename(m.macs[0])
    path = tftp / PXE_DIR / name
    try:
        entry = pxe_entry(path.read_text())
    except OSError as e:
        raise InputError(f"{path}: cannot read the machine's PXELINUX file: {e.strerror}") from None
    return pxe_cmdline(entry), f"the current entry of {PXE_DIR}/{name}"


def boot_fleet(inv: Inventory, opts: FleetOptions, cache: Path, progress: Progress) -> FleetResult:
    check_fleet_options(opts)
    b = opts.boot
    machines = select_machines(inv, opts.machines)
    t0 = time.monotonic()

    def say(msg: str) -> None:
        progress(f"[{time.monotonic() - t0:6.1f}s] {msg}")

    say(f"{len(machines)} machines ({', '.join(m.name for m in machines)}), via {b.via}, {opts.jobs} at a time")
    qemu = need_binary(QEMU)
    work = b.workdir or Path(tempfile.mkdtemp(prefix="netbootgen-fleet-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        profiles = list(dict.fromkeys(m.profile for m in machines))
        built = build(inv, work / "render", cache, systemd=b.systemd, profiles=profiles, progress=say,
                      dracut=b.dracut, compress=b.compress)
        exports = {m.export: inv.exports[m.export] for m in machines}
        images: dict[str, Path] = {}
        args: list[str] = []
        for ex in exports.values():
            images[ex.name] = make_rootfs(work / "exports" / f"{ex.name}.img", tag=ex.name, offset=ex.offset,
                                          length=ex.length)
            args += export_args(inv, ex, images[ex.name])
        mtu = max(machine_mtu(inv, m) for m in machines)
        sock = work / FLEET_SOCK
        args += ["--transport", f"unix-stream:{sock}", "--mac", TARGET_MAC, "--mtu", str(mtu)]
        say(f"one AoE target for {len(exports)} exports ({', '.join(exports)}) on {sock}")
        accel = choose_accel(b.accel, qemu, built.profiles[profiles[0]].kernel, cache)
        # direct boots: each profile's kernel and initrd files for QEMU, made once before the guests start
        direct = {p: (boot_kernel(built.profiles[p].kernel.vmlinuz, cache),
                      raw_initrd(built.profiles[p].initrd.path, cache)) for p in profiles} if b.via == "direct" else {}
        with ServeProcess(args, work / "target.log"):
            start = time.monotonic()
            with ThreadPoolExecutor(max_workers=opts.jobs, thread_name_prefix="guest") as pool:
                futures = [pool.submit(_boot_one, inv, m, b, built, direct, qemu, accel, sock, work, start, say)
                           for m in machines]
                booted = [f.result() for f in futures]
            seconds = time.monotonic() - start
        names = {e: marker_machine(read_marker(images[e], ex.offset)) for e, ex in exports.items() if not ex.readonly}
        runs = []
        for run in booted:
            ex = exports[run.evidence.export]
            run.image_name = names.get(ex.name)
            run.result.disk_marker = run.image_name is not None
            run.problems = prove(run.evidence, names)
            runs.append(run)
            what = "PXELINUX file" if b.via == "pxe" else "kernel arguments"
            say(f"{run.result.machine}: " + (f"proofs ok (identity, export, {what})" if not run.problems
                                             else "; ".join(run.problems)))
        return FleetResult(runs, b.via, accel, opts.jobs, seconds, work if b.workdir else None)
    finally:
        if b.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def _boot_one(inv: Inventory, m: Machine, b: BootTestOptions, built: BuildResult, direct: dict[str, tuple[Path, Path]],
              qemu: Path, accel: str, sock: Path, work: Path, start: float, say: Progress) -> MachineRun:
    """Boot one machine of the fleet (in a worker thread) and collect its console."""
    ex = inv.exports[m.export]
    mwork = work / "machines" / m.name
    mwork.mkdir(parents=True, exist_ok=True)
    prof = built.profiles[m.profile]
    mtu = machine_mtu(inv, m)
    spec = QemuSpec(
        qemu,
        accel=accel,
        cpus=b.cpus or 1,  # guests side by side: one vCPU each
        netdev=stream_netdev(sock),
        mac=m.macs[0],
        name=m.name,
        serial_number=m.name,
        host_mtu=mtu if mtu != 1500 else None,
        bios_log=mwork / "bios.log",
        tftp_root=built.tftp if b.via == "pxe" else None,
        kernel=direct[m.profile][0] if m.profile in direct else None,
        initrd=direct[m.profile][1] if m.profile in direct else None,
        append=" ".join(kernel_args(inv, m)),
    )
    started = time.monotonic() - start
    say(f"{m.name}: booting QEMU ({accel}, {m.macs[0]}, root {ex.target}); console log {mwork / 'console.log'}")

    def on_stage(r: StageResult) -> None:
        say(f"{m.name}: stage {r.name:<15} reached at {r.t:6.2f} s")

    report = follow(qemu_argv(spec), stages_for(b.via, ex), log_path=mwork / "console.log",
                    bios_log=mwork / "bios.log", stage_timeout=b.stage_timeout, progress=on_stage)
    say(f"{m.name}: {'all stages reached' if report.ok else report.failure} ({report.seconds:.1f} s)")
    expected, source = expected_cmdline(inv, m, b.via, built.tftp)
    evidence = Evidence(m.name, ex.name, ex.readonly, report.console, expected, source)
    result = BootTestResult(m.name, b.via, accel, report, prof.initrd, False, mwork if b.workdir else None)
    return MachineRun(result, evidence, started=started)
