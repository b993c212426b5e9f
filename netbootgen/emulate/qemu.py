"""QEMU command lines (pure: spec -> argv) and the KVM probe."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from netbootgen.run import need_binary

QEMU = "qemu-system-x86_64"
GUEST_TIMEOUT_MARK = "Kernel panic"


def optarg(value: str | os.PathLike[str]) -> str:
    """Quote a value for a QEMU -option key=value list: commas are doubled."""
    return os.fspath(value).replace(",", ",,")


@dataclass(frozen=True)
class QemuSpec:
    mac: str
    qemu_sock: Path  # QEMU binds this unix datagram socket ...
    target_sock: Path  # ... and sends AoE frames to the target bound here
    bios_log: Path
    accel: str = "tcg"
    memory_mib: int = 512
    cpus: int = 1
    tftp_root: Path | None = None  # PXE: slirp serves this TFTP root with bootfile pxelinux.0
    kernel: Path | None = None  # direct kernel boot
    initrd: Path | None = None
    append: str = ""
    host_mtu: int | None = None


def qemu_argv(spec: QemuSpec) -> list[str]:
    nic_opts = f"mac={spec.mac}" + (f",host_mtu={spec.host_mtu}" if spec.host_mtu else "")
    aoe_netdev = (
        f"dgram,id=aoe0,local.type=unix,local.path={optarg(spec.qemu_sock)},"
        f"remote.type=unix,remote.path={optarg(spec.target_sock)}"
    )
    argv = [
        os.fspath(need_binary(QEMU)),
        "-machine", f"pc,accel={spec.accel}",
        "-cpu", "max",
        "-m", str(spec.memory_mib),
        "-smp", str(spec.cpus),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-serial", "stdio",
        "-chardev", f"file,id=bios,path={optarg(spec.bios_log)}",
        "-device", "isa-debugcon,iobase=0x402,chardev=bios",
        "-netdev", aoe_netdev,
    ]  # fmt: skip
    if spec.tftp_root is not None:
        # One NIC shared by slirp (DHCP + TFTP for PXE) and the AoE socket, through a hub.
        argv += [
            "-netdev", f"user,id=slirp0,tftp={optarg(spec.tftp_root)},bootfile=pxelinux.0",
            "-netdev", "hubport,id=hp0,hubid=0,netdev=slirp0",
            "-netdev", "hubport,id=hp1,hubid=0,netdev=aoe0",
            "-netdev", "hubport,id=hp2,hubid=0",
            "-device", f"virtio-net-pci,netdev=hp2,{nic_opts},bootindex=1",
            "-boot", "order=n",
        ]  # fmt: skip
    else:
        argv += ["-device", f"virtio-net-pci,netdev=aoe0,{nic_opts}"]
    if spec.kernel is not None:
        argv += ["-kernel", os.fspath(spec.kernel), "-append", spec.append]
        if spec.initrd is not None:
            argv += ["-initrd", os.fspath(spec.initrd)]
    return argv


def qemu_version() -> str:
    out = subprocess.run([need_binary(QEMU), "--version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else "unknown"


def probe_kvm(kernel: Path, cache: Path, timeout: float = 15.0) -> bool:
    """Can a KVM guest boot here? Boot `kernel` without root and wait for its panic; the answer is cached per
    host kernel and QEMU version (a hanging KVM guest costs the whole timeout once)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    key = f"{platform.release()}|{qemu_version()}"
    record = cache / "kvm-probe.json"
    try:
        saved = json.loads(record.read_text())
        if saved.get("key") == key:
            return bool(saved["ok"])
    except (OSError, ValueError, KeyError):
        pass
    argv = [
        os.fspath(need_binary(QEMU)), "-machine", "pc,accel=kvm", "-cpu", "max", "-m", "256",
        "-nodefaults", "-display", "none", "-no-reboot", "-serial", "stdio",
        "-kernel", os.fspath(kernel), "-append", "console=ttyS0 panic=-1",
    ]  # fmt: skip
    start = time.monotonic()
    try:
        out = subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False).stdout
        ok = GUEST_TIMEOUT_MARK.encode() in out
    except subprocess.TimeoutExpired:
        ok = False
    cache.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"key": key, "ok": ok, "seconds": round(time.monotonic() - start, 1)}) + "\n")
    return ok
