"""boot-test: fetch the kernel, render, build the initrd, serve the root over AoE, boot QEMU, report stages."""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from netbootgen.build import build
from netbootgen.emulate.console import ConsoleReport, Stage, StageResult, follow
from netbootgen.emulate.derived import raw_initrd
from netbootgen.emulate.firmware import firmware_stages, uefi_vars
from netbootgen.emulate.netns import network_scope, open_network
from netbootgen.emulate.qemu import (
    QEMU,
    QemuSpec,
    boot_kernel,
    check_accel,
    dgram_netdev,
    guest_cpus,
    probe_kvm,
    qemu_argv,
    sercon_file,
)
from netbootgen.emulate.realroot import DEFAULT_SIZE, REAL_ROOT_STAGES, RootCheck, check_root, prepare_root, with_check
from netbootgen.emulate.rootfs import INIT_MARKER, make_rootfs, read_marker
from netbootgen.emulate.targetplan import TargetPlan, TargetRunner
from netbootgen.errors import InputError
from netbootgen.fleet import kernel_args, machine_mtu
from netbootgen.inventory import Export, Inventory, Machine, normalize_mac
from netbootgen.kernel.fetch import KernelTree
from netbootgen.modules.initrd import InitrdResult
from netbootgen.pxe.grub import GRUB_CFG, GRUB_DIR, default_grub_menu
from netbootgen.pxe.menu import DEFAULT_FILE, PXE_DIR, Entry, menu_entries
from netbootgen.run import need_binary

TARGET_MAC = "02:00:00:00:ae:01"
TARGET_SOCK, QEMU_SOCK = "target.sock", "qemu.sock"
ENTRIES = ("current", "previous")  # the per-MAC menus' entries (netbootgen.pxe.menu.menu_entries)
# What PXELINUX prints when an entry says LOCALBOOT (core/fs/pxe/pxe.c), the `default` file's only entry: on the
# screen, which SeaBIOS's serial console shows (the file has no SERIAL of its own). Then SeaBIOS goes on to its
# next boot device, the local disk (none here), as its debug log tells.
LOCALBOOT = Stage("localboot", re.compile(r"Booting from local disk\.\.\."))
LOCAL_DISK = Stage("local-disk", re.compile(r"Booting from Hard Disk\.\.\."), source="bios")
# UEFI: GRUB's grub.cfg boots its one entry, `exit` back to the firmware, which goes on to its next boot option.
GRUB_LOCALBOOT = Stage("localboot", re.compile(re.escape(f"Booting `{default_grub_menu().default.title}'")))
NEXT_BOOT_OPTION = Stage("next-boot-option", re.compile(r"BdsDxe: (failed to load|loading) Boot[0-9A-F]{4}"))
FALLBACK_FILES = {"bios": f"{PXE_DIR}/{DEFAULT_FILE}", "uefi": f"{GRUB_DIR}/{GRUB_CFG}"}
PXELINUX_PROMPT = re.compile(r"(^|\n)boot: ")  # PROMPT 1: PXELINUX waits TIMEOUT for a label here

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BootTestOptions:
    machine: str | None = None
    via: str = "pxe"  # "pxe" or "direct"
    accel: str = "auto"  # "auto", "tcg" or "kvm"
    systemd: bool = True  # systemd initrd, or dracut's shell-only initrd
    dracut: str = "system"  # "system" or "ng" (dracut-ng 106, netbootgen.modules.dracut_ng)
    compress: str | None = None  # the initrd's dracut --compress; None: that dracut's default
    stage_timeout: float = 180.0
    workdir: Path | None = None  # kept after the run; default: a temporary folder, removed
    network: str = "slirp"  # "slirp" (QEMU's DHCP/TFTP) or "netns" (root: bridge, dnsmasq, tap; emulate/netns.py)
    firmware: str = "bios"  # "bios" (SeaBIOS + iPXE) or "uefi" (OVMF)
    aoe_target: str = "serve"  # with netns: "serve" (netbootgen serve on the bridge) or "vblade" (the unit's command)
    dhcp_mode: str | None = None  # with netns: the [dhcp] mode to run ("server"/"proxy"; default: the inventory's)
    root: str = "busybox"  # "busybox" (made here) or "debian" (netbootgen image build, cached)
    root_image: Path | None = None  # boot this image (the machine's fstype) instead; copy-on-write unless persist
    persist: bool = False  # let the guest write to root_image itself
    initrd_path: Path | None = None  # boot this initrd (--via direct) instead of the one built for the profile
    kernel_args: tuple[str, ...] | None = None  # the whole kernel command line, instead of the machine's
    image_size: int = DEFAULT_SIZE  # of the Debian image
    serve_extra: tuple[str, ...] = ()  # more `netbootgen serve` arguments, e.g. ("--fault", "drop=0.05")
    target_plan: TargetPlan | None = None  # start the target late, restart it at a stage, or leave it out
    entry: str = "current"  # the per-MAC menu's entry to boot: "previous" is typed at PXELINUX's boot: prompt
    mac: str | None = None  # the guest's MAC instead of the machine's first; one no machine has: local boot
    cpus: int | None = None  # the guest's vCPUs; None: emulate.qemu.guest_cpus() (a fleet: 1 per guest)


@dataclass
class BootTestResult:
    machine: str
    via: str
    accel: str
    report: ConsoleReport
    initrd: InitrdResult
    disk_marker: bool
    workdir: Path | None
    root_check: RootCheck | None = None  # a real root: what the host found on the disk afterwards
    target_events: tuple[tuple[float, str], ...] = ()  # (s since the target's plan started, what happened)
    entry: str = "current"
    mac: str | None = None
    localboot: str | None = None  # a MAC no machine has, via PXE: the fallback file whose local boot is expected

    @property
    def ok(self) -> bool:
        if self.localboot:
            return self.report.ok
        return self.report.ok and self.disk_marker and (self.root_check is None or self.root_check.ok)

    @property
    def outcome(self) -> str:
        """What the run showed: the local boot of an unknown MAC, the machine's root booted, or failed."""
        if not self.ok:
            return "failed"
        return f"local boot: the default entry ({self.localboot})" if self.localboot else "booted"

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "machine": self.machine,
            "via": self.via,
            "entry": self.entry,
            "mac": self.mac,
            "outcome": self.outcome,
            "stages": [{"name": s.name, "t": s.t, "ok": s.ok} for s in self.report.stages],
            "console_log": self.report.console.replace("\r", ""),
            "accel": self.accel,
            "failure": self.report.failure,
            "disk_marker": self.disk_marker,
            "root_check": self.root_check.to_json() if self.root_check else None,
            "failed_stage": next((s.name for s in self.report.stages if not s.ok), None),
            "last_lines": self.report.last_lines() if not self.ok else "",
            "target_events": [{"t": t, "event": e} for t, e in self.target_events],
            "seconds": self.report.seconds,
            "initrd": {
                "size": self.initrd.size,
                "build_seconds": round(self.initrd.seconds, 1),
                "cached": self.initrd.cached,
                "systemd": "-systemd-" in self.initrd.path.name,
                "dracut": "ng" if self.initrd.path.name.rsplit("-", 2)[-2] == "ng" else "system",
            },
        }


def stages_for(via: str, ex: Export, real: bool = False) -> list[Stage]:
    """The stages of a boot; `real`: a real root (systemd, the check unit, a clean poweroff), not busybox's init."""
    dev = re.escape(ex.target)
    stages = [
        Stage("firmware", re.compile(r"Booting from ROM"), source="bios"),
        Stage("pxelinux", re.compile(r"PXELINUX \d+\.\d+")),
        Stage("kernel", re.compile(r"Linux version \S+")),
        Stage("initrd", re.compile(r"95aoe: root on /dev/etherd/")),
        Stage("aoe-discovered", re.compile(dev + r" v[0-9a-f]+ has \d+ sectors")),
        Stage("root-mounted", re.compile(r"\(etherd[!/]" + dev + r"(p\d+)?\): (mounted filesystem|Mounting V\d)")),
        Stage("init", re.compile(re.escape(INIT_MARKER))),
    ]
    if real:
        stages = [*stages[:-1], *REAL_ROOT_STAGES]
    return [s for s in stages if via == "pxe" or s.name != "pxelinux"]


def entry_stages(stages: list[Stage], entries: tuple[Entry, Entry], label: str, via: str,
                 firmware: str = "bios") -> list[Stage]:
    """The stages of a boot of the per-MAC menu's entry `label`. Not the default entry, via PXE: with PXELINUX
    a stage `prompt` (its `boot: `, shown for the menu's TIMEOUT) types the label; with GRUB (UEFI) the `grub`
    stage (the file's echo line, just before its menu) types `v` (GRUB's menu key for down) once per entry
    before it and Enter. The `kernel` stage is then the kernel's command line naming the entry's own kernel
    (BOOT_IMAGE=; PXELINUX adds initrd=, checked too), so that the default entry booting instead cannot pass.
    (The PXELINUX menu's SAY line is not on the serial console: PXELINUX prints it while it reads the file,
    before the file's SERIAL takes effect.)"""
    entry = next(e for e in entries if e.label == label)
    if entry is entries[0] or via != "pxe":
        return stages
    if firmware == "uefi":
        keys = "v" * entries.index(entry) + "\r"
        kernel = Stage("kernel", re.compile(rf"Command line: BOOT_IMAGE=/{re.escape(entry.kernel or '')} "))
        return [replace(st, send=keys) if st.name == "grub" else kernel if st.name == "kernel" else st
                for st in stages]
    prompt = Stage("prompt", PXELINUX_PROMPT, send=f"{label}\r")
    kernel = Stage("kernel", re.compile(rf"Command line: BOOT_IMAGE={re.escape(entry.kernel or '')} .*"
                                        rf"initrd={re.escape(entry.initrd or '')}(\s|$)"))
    out: list[Stage] = []
    for st in stages:
        out += [st, prompt] if st.name == "pxelinux" else [kernel] if st.name == "kernel" else [st]
    return out


def localboot_stages(stages: list[Stage], firmware: str = "bios") -> list[Stage]:
    """A MAC without a pxelinux.cfg file: PXELINUX loads `default`, whose LOCALBOOT hands the machine back to the
    firmware: the firmware, PXELINUX, its local-boot line, and the firmware booting from the local disk. UEFI:
    iPXE, GRUB booting grub.cfg's entry (`exit`), and the firmware going on to its next boot option."""
    if firmware == "uefi":
        return [*(st for st in stages if st.name == "firmware"), GRUB_LOCALBOOT, NEXT_BOOT_OPTION]
    return [*(st for st in stages if st.name in ("firmware", "pxelinux")), LOCALBOOT, LOCAL_DISK]


def guest_mac(inv: Inventory, m: Machine, mac: str | None) -> tuple[str, bool]:
    """The guest's MAC (`mac`, or the machine's first) and whether no machine of `inv` has it."""
    if mac is None:
        return m.macs[0], False
    norm = normalize_mac(mac)
    if norm is None:
        raise InputError(f"--mac: {mac!r} is not a MAC address (e.g. 52:54:00:12:34:56)")
    owner = next((x.name for x in inv.machines.values() if norm in x.macs), None)
    if owner is not None and owner != m.name:
        raise InputError(f"--mac {norm} is machine {owner}'s; boot it with --machine {owner}")
    return norm, owner is None


def choose_accel(requested: str, qemu: Path, kernel: KernelTree, cache: Path) -> str:
    if requested != "auto":
        return requested
    return "kvm" if probe_kvm(qemu, kernel.vmlinuz, cache) else "tcg"


def serve_args(ex: Export, image: Path, work: Path, allow: list[str], mtu: int,
               overlay: Path | None = None) -> list[str]:
    """`netbootgen serve` arguments: the export's address on `image` (copy-on-write into `overlay` when given),
    over a unix datagram pair with QEMU."""
    return [
        "--export", f"{ex.shelf}.{ex.slot}={image}" + (f",cow={overlay}" if overlay else ""),
        "--transport", f"unix-dgram:{work / TARGET_SOCK}:{work / QEMU_SOCK}",
        "--mac", TARGET_MAC,
        "--mtu", str(mtu),
        *[a for mac in allow for a in ("--mac-allow", mac)],
    ]  # fmt: skip


def boot_test(inv: Inventory, opts: BootTestOptions, cache: Path, progress: Progress) -> BootTestResult:
    if opts.via not in ("pxe", "direct"):
        raise InputError(f"--via must be pxe or direct, not {opts.via!r}")
    if opts.machine is not None and opts.machine not in inv.machines:
        raise InputError(f"--machine: no machine named {opts.machine!r} (machines: {', '.join(inv.machines)})")
    if opts.accel not in ("auto", "tcg", "kvm"):
        raise InputError(f"--accel must be auto, tcg or kvm, not {opts.accel!r}")
    check_accel(opts.accel)
    m: Machine = inv.machine(opts.machine)
    ex = inv.exports[m.export]
    if opts.root not in ("busybox", "debian"):
        raise InputError(f"--root must be busybox or debian, not {opts.root!r}")
    if opts.initrd_path is not None and opts.via != "direct":
        raise InputError("an initrd of one's own (initrd_path) boots with --via direct")
    if opts.persist and opts.root_image is None:
        raise InputError("--persist goes with --root-image (the Debian image is booted as a copy)")
    if opts.entry not in ENTRIES:
        raise InputError(f"--entry must be current or previous, not {opts.entry!r}")
    mac, unknown = guest_mac(inv, m, opts.mac)
    # PXELINUX finds no 01-<mac> file and loads `default` (GRUB: grub.cfg)
    localboot = FALLBACK_FILES.get(opts.firmware) if unknown and opts.via == "pxe" else None
    if opts.entry != "current" and localboot:
        raise InputError(f"--entry {opts.entry}: an entry of the machine's own menu, which a MAC no machine has "
                         "does not get")
    real = opts.root == "debian" or opts.root_image is not None
    if real:  # the image's check unit runs only when asked on the kernel command line
        inv = with_check(inv, m)
        m = inv.machines[m.name]
    profile = inv.profiles[m.profile]
    t0 = time.monotonic()

    def say(msg: str) -> None:
        progress(f"[{time.monotonic() - t0:6.1f}s] {msg}")

    unknown_note = f", no machine has it: expecting the local boot of {localboot}" if localboot else ""
    entry_note = f", entry {opts.entry}" if opts.entry != "current" else ""
    say(f"machine {m.name} ({mac}{unknown_note}), root {ex.target}, profile {profile.name}, via {opts.via}"
        f"{entry_note}")
    qemu = need_binary(QEMU)
    work = opts.workdir or Path(tempfile.mkdtemp(prefix="netbootgen-boot-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        built = build(inv, work / "render", cache, systemd=opts.systemd, profiles=[profile.name], progress=say,
                      dracut=opts.dracut, compress=opts.compress)
        kernel, initrd = built.profiles[profile.name].kernel, built.profiles[profile.name].initrd
        entries = menu_entries(inv, m)
        entry = next(e for e in entries if e.label == opts.entry)
        # --via direct boots the entry's own files from the TFTP tree (the previous pair is not in the cache)
        direct_kernel, direct_initrd = ((kernel.vmlinuz, initrd.path) if entry is entries[0] else
                                        (built.tftp / (entry.kernel or ""), built.tftp / (entry.initrd or "")))
        root = prepare_root(inv, m, work, cache, say, root_image=opts.root_image, persist=opts.persist,
                            size=opts.image_size) if real else None
        image = root.image if root else make_rootfs(work / "root.img")
        cow = ", copy-on-write into " + str(root.overlay) if root and root.overlay else ""
        say(f"root image {image} ({f'{root.source}, {root.fstype}{cow}' if root else 'busybox, ext4'}); "
            "starting the AoE target")
        mtu = machine_mtu(inv, m)
        net = open_network(opts.network, inv, m, image, built.tftp, work, mtu, opts.aoe_target, opts.dhcp_mode, say)
        args = [*serve_args(ex, image, work, list(m.macs), mtu, root.overlay if root else None), *opts.serve_extra]
        if net:
            args = [*net.serve_args(), *opts.serve_extra]
        with network_scope(net), TargetRunner(args, work / "target.log", net.plan(opts.target_plan) if net
                                              else opts.target_plan) as target:
            accel = choose_accel(opts.accel, qemu, kernel, cache)
            qkernel = boot_kernel(direct_kernel, cache, opts.firmware) if opts.via == "direct" else None
            qinitrd = raw_initrd(opts.initrd_path or direct_initrd, cache) if opts.via == "direct" else None
            qspec = QemuSpec(
                qemu,
                accel=accel,
                cpus=guest_cpus(opts.cpus),
                netdev=net.netdev if net else dgram_netdev(work / QEMU_SOCK, work / TARGET_SOCK),
                boot_nic=net is not None and opts.via == "pxe",
                firmware=opts.firmware,
                uefi_vars=uefi_vars(work) if opts.firmware == "uefi" else None,
                mac=mac,
                name=m.name,
                host_mtu=mtu if mtu != 1500 else None,
                bios_log=work / "bios.log",
                # the default file has no SERIAL: SeaBIOS shows PXELINUX's screen
                bios_console=sercon_file(work) if localboot and opts.firmware == "bios" else None,
                tftp_root=built.tftp if opts.via == "pxe" and not net else None,
                kernel=qkernel,
                initrd=qinitrd,
                append=" ".join(kernel_args(inv, m) if opts.kernel_args is None else opts.kernel_args),
            )
            pvh = f", kernel {qkernel} (the bzImage's ELF, PVH entry)" if qkernel and qkernel != direct_kernel else ""
            if qinitrd and qinitrd != (opts.initrd_path or direct_initrd):
                pvh += f", initrd {qinitrd} (its archives uncompressed)"
            say(f"booting QEMU ({accel}, {qspec.cpus} vCPU{'s' if qspec.cpus > 1 else ''}{pvh}); console log "
                f"{work / 'console.log'}")
            stages = firmware_stages(opts.firmware, stages_for(opts.via, ex, real))
            stages = localboot_stages(stages, opts.firmware) if localboot else \
                entry_stages(stages, entries, opts.entry, opts.via, opts.firmware)
            boot_start = time.monotonic() - t0

            def on_stage(r: StageResult) -> None:
                progress(f"[{boot_start + (r.t or 0):6.1f}s]   stage {r.name:<15} reached at {r.t:6.2f} s")
                target.on_stage(r.name)

            report = follow(qemu_argv(qspec), stages, log_path=work / "console.log",
                            bios_log=work / "bios.log", stage_timeout=opts.stage_timeout, progress=on_stage,
                            exit_timeout=None if localboot else 30.0)  # a local boot never powers off
            if target.error is not None:
                raise target.error
        root_check = check_root(root, work) if root and not localboot else None
        marker = root_check.data_ok if root_check else not localboot and read_marker(image) is not None
        if localboot:
            say(f"outcome: local boot: the default entry ({localboot})" if report.ok else
                "the local boot was not seen")
        else:
            say("the guest's write reached the AoE disk" if marker else
                "no write from the guest found on the AoE disk")
        if root_check:
            say(f"root file system {'clean' if root_check.clean else 'NOT CLEAN'} ({root_check.fs_detail}); "
                f"the check unit's boot counter on the disk: {root_check.boots}")
        result = BootTestResult(m.name, opts.via, accel, report, initrd, marker, work if opts.workdir else None,
                                target_events=tuple(target.events), entry=opts.entry,
                                mac=mac if opts.mac is not None else None, localboot=localboot)
        result.root_check = root_check
        return result
    finally:
        if opts.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
