"""QEMU command lines: one spec -> argv builder (pure) for every guest netbootgen starts, the KVM probe, and
`qmp_command` for a running guest's QMP socket."""

from __future__ import annotations

import json
import os
import platform
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netbootgen.emulate.pvh import pvh_kernel
from netbootgen.errors import CommandFailed, InputError
from netbootgen.output import write_file
from netbootgen.pxe.grub import GRUB_EFI_IMAGE
from netbootgen.run import run

QEMU = "qemu-system-x86_64"
KVM = Path("/dev/kvm")
# The probe boots a kernel with no root file system: reaching its panic means the KVM guest ran.
KVM_PROBE_MARK = "Kernel panic"
# Debian's ovmf: UEFI firmware code (read-only) and the variable store each guest gets a copy of.
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS.fd")


def boot_kernel(vmlinuz: Path, cache: Path, firmware: str = "bios") -> Path:
    """The kernel file a direct boot hands QEMU: under SeaBIOS the bzImage's own ELF through its PVH entry
    (emulate.pvh: no decompressor to run, 5-6 s less under TCG), else (OVMF boots the EFI stub, or a kernel
    without CONFIG_PVH) the bzImage itself."""
    if firmware != "bios":
        return vmlinuz
    return pvh_kernel(vmlinuz, cache) or vmlinuz


def optarg(value: str | os.PathLike[str]) -> str:
    """Quote a value for a QEMU -option key=value list: commas are doubled."""
    return os.fspath(value).replace(",", ",,")


def dgram_netdev(local: Path, remote: Path) -> str:
    """A -netdev backend (without its id): QEMU binds `local` and sends frames to `remote` (unix datagrams)."""
    return (
        f"dgram,local.type=unix,local.path={optarg(local)},"
        f"remote.type=unix,remote.path={optarg(remote)}"
    )


def stream_netdev(path: Path) -> str:
    """A -netdev backend (without its id): QEMU connects to the unix stream server at `path`."""
    return f"stream,server=off,addr.type=unix,addr.path={optarg(path)}"


def tap_netdev(ifname: str) -> str:
    """A -netdev backend (without its id): the existing tap interface `ifname`."""
    return f"tap,ifname={ifname},script=no,downscript=no"


SERCON_PORT = 0x3F8  # COM1: the serial port -serial stdio connects


def sercon_file(work: Path) -> Path:
    """A file for QemuSpec.bios_console: SeaBIOS's fw_cfg `etc/sercon-port` (the I/O port, little-endian), which
    turns on its serial console: what the firmware, iPXE and a boot loader write to the screen (int 10h) is
    written to the serial port too, also before a boot loader sets up a serial console of its own."""
    path = work / "sercon-port"
    write_file(path, SERCON_PORT.to_bytes(2, "little"), 0o644)
    return path


def guest_cpus(cpus: int | None = None) -> int:
    """vCPUs for one guest booted alone: `cpus`, else 2 where the host has 2 cores or more. TCG runs each vCPU
    in its own thread, so systemd's parallel units (journald, dracut-cmdline, udev) use the second core: direct
    boots of the example to init, paired on a 2-core host, 16.1 s with 2 against 19.8 s with 1 (3 of 3 pairs;
    docs/benchmarks.md, section 2026-12-03 15:20 UTC). Guests booted side by side (a fleet) keep one each."""
    return cpus if cpus is not None else min(2, os.cpu_count() or 1)


# The guest CPU under TCG: the x86-64 baseline, no AVX, MPX or PKU for TCG to emulate. Direct boots of the
# example to init, paired with "max" on one host: 11 of 14 pairs faster, median 2.6 s (29.2 against 32.0 s;
# docs/benchmarks.md, 2026-12-03).
TCG_CPU = "qemu64"


@dataclass(frozen=True)
class QemuSpec:
    """One x86-64 guest: serial console on stdout, no display, no reboot; a virtio NIC (`netdev`) and any
    further ones (`more_nics`)."""

    binary: Path
    accel: str = "tcg"
    # -cpu; None: "max" under KVM (the host's CPU), TCG_CPU under TCG
    cpu: str | None = None
    memory_mib: int = 512
    cpus: int = 1
    kernel: Path | None = None  # direct kernel boot; without it the firmware boots (PXE when tftp_root is set)
    initrd: Path | None = None
    append: str = ""
    netdev: str | None = None  # the NIC's -netdev backend without id (dgram_netdev, ...); None: no NIC
    mac: str | None = None
    host_mtu: int | None = None
    tftp_root: Path | None = None  # PXE: slirp's DHCP + TFTP (bootfile pxelinux.0) share the NIC through a hub
    nic_rom: bool = True  # False: no option ROM on the NIC (a direct boot needs no iPXE; saves time)
    bios_log: Path | None = None  # SeaBIOS's debug port (0x402) output
    firmware: str = "bios"  # "bios": SeaBIOS; "uefi": OVMF (OVMF_CODE, with `uefi_vars` as its variable store)
    uefi_vars: Path | None = None  # a writable copy of OVMF_VARS, one per guest
    boot_nic: bool = False  # network boot from the NIC first (bootindex), without slirp's TFTP
    name: str | None = None  # -name: the guest and its process (ps, top) named, e.g. after the machine
    serial_number: str | None = None  # SMBIOS system serial: the guest reads /sys/class/dmi/id/product_serial
    bios_console: Path | None = None  # sercon_file(): SeaBIOS's screen text on the serial console too
    # Further virtio NICs, each (-netdev backend without id, MAC): netdev ids net1, net2, ... in order (eth1, ...
    # in the guest); same host_mtu and nic_rom as the first, never booted from.
    more_nics: tuple[tuple[str, str], ...] = ()
    qmp: Path | None = None  # a QMP server on this unix socket (qmp_command: e.g. set_link net1 off, a cut cable)


def qemu_argv(spec: QemuSpec) -> list[str]:
    argv = [
        os.fspath(spec.binary),
        "-machine", f"pc,accel={spec.accel}",
        "-cpu", spec.cpu or ("max" if spec.accel == "kvm" else TCG_CPU),
        "-m", str(spec.memory_mib),
        "-smp", str(spec.cpus),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-serial", "stdio",
        *(["-name", f"guest={optarg(spec.name)},process={optarg(spec.name)}"] if spec.name else []),
        *(["-smbios", f"type=1,serial={optarg(spec.serial_number)}"] if spec.serial_number else []),
        *(["-fw_cfg", f"name=etc/sercon-port,file={optarg(spec.bios_console)}"] if spec.bios_console else []),
        *(["-qmp", f"unix:{optarg(spec.qmp)},server=on,wait=off"] if spec.qmp else []),
    ]  # fmt: skip
    if spec.firmware == "uefi":
        if spec.uefi_vars is None:
            raise ValueError("UEFI firmware needs uefi_vars (a copy of OVMF_VARS)")
        argv += [
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={optarg(OVMF_CODE)}",
            "-drive", f"if=pflash,format=raw,unit=1,file={optarg(spec.uefi_vars)}",
        ]  # fmt: skip
    elif spec.firmware != "bios":
        raise ValueError(f"firmware must be bios or uefi, not {spec.firmware!r}")
    if spec.bios_log is not None:
        argv += [
            "-chardev", f"file,id=bios,path={optarg(spec.bios_log)}",
            "-device", "isa-debugcon,iobase=0x402,chardev=bios",
        ]  # fmt: skip
    argv += _nic(spec)
    for i, (netdev, mac) in enumerate(spec.more_nics, 1):
        argv += ["-netdev", f"{netdev},id=net{i}", "-device", f"{_nic_device(spec, mac)},netdev=net{i}"]
    if spec.kernel is not None:
        argv += ["-kernel", os.fspath(spec.kernel), "-append", spec.append]
        if spec.initrd is not None:
            argv += ["-initrd", os.fspath(spec.initrd)]
    return argv


def _nic(spec: QemuSpec) -> list[str]:
    if spec.netdev is None:
        if spec.tftp_root is not None:
            raise ValueError("a PXE boot (tftp_root) needs a netdev")
        return []
    nic = _nic_device(spec, spec.mac)
    if spec.tftp_root is None:
        index = ",bootindex=1" if spec.boot_nic else ""
        return ["-netdev", f"{spec.netdev},id=net0", "-device", f"{nic},netdev=net0{index}",
                *(["-boot", "order=n"] if spec.boot_nic else [])]
    # One NIC shared by slirp (DHCP + TFTP for PXE) and the AoE backend, through a hub.
    bootfile = GRUB_EFI_IMAGE if spec.firmware == "uefi" else "pxelinux.0"
    return [
        "-netdev", f"{spec.netdev},id=net0",
        "-netdev", f"user,id=slirp0,tftp={optarg(spec.tftp_root)},bootfile={bootfile}",
        "-netdev", "hubport,id=hp0,hubid=0,netdev=slirp0",
        "-netdev", "hubport,id=hp1,hubid=0,netdev=net0",
        "-netdev", "hubport,id=hp2,hubid=0",
        "-device", f"{nic},netdev=hp2,bootindex=1",
        "-boot", "order=n",
    ]  # fmt: skip


def _nic_device(spec: QemuSpec, mac: str | None) -> str:
    nic = "virtio-net-pci"
    if mac is not None:
        nic += f",mac={mac}"
    if spec.host_mtu is not None:
        nic += f",host_mtu={spec.host_mtu}"
    if not spec.nic_rom:
        nic += ",romfile="
    return nic


def qmp_command(path: Path, command: str, arguments: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
    """Run one QMP command on a guest's QMP socket (QemuSpec.qmp) and return its "return" value; a QMP error
    raises CommandFailed. E.g. qmp_command(sock, "set_link", {"name": "net1", "up": False}): the NIC and its
    backend lose the link (the guest sees no carrier, frames are dropped both ways), as a pulled cable."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(os.fspath(path))
        stream = sock.makefile("rwb")

        def reply() -> dict[str, Any]:
            while True:  # skip asynchronous events
                line = stream.readline()
                if not line:
                    raise CommandFailed(f"QMP {path}: connection closed")
                msg: dict[str, Any] = json.loads(line)
                if "return" in msg or "error" in msg or "QMP" in msg:
                    return msg

        reply()  # the greeting
        result = None
        for name, args in (("qmp_capabilities", None), (command, arguments)):
            stream.write(json.dumps({"execute": name, **({"arguments": args} if args else {})}).encode() + b"\n")
            stream.flush()
            msg = reply()
            if "error" in msg:
                raise CommandFailed(f"QMP {name} {json.dumps(args)}: {msg['error'].get('desc', msg['error'])}")
            result = msg["return"]
        return result


def qemu_version(binary: Path) -> str:
    out = run([binary, "--version"], check=False).stdout
    return out.splitlines()[0] if out else "unknown"


def kvm_usable() -> bool:
    return os.access(KVM, os.R_OK | os.W_OK)


def check_accel(accel: str) -> None:
    """Refuse KVM where /dev/kvm cannot be opened (QEMU would fail later with a less helpful message)."""
    if accel == "kvm" and not kvm_usable():
        why = "does not exist" if not KVM.exists() else "is not readable and writable by this user"
        raise InputError(f"--accel kvm: {KVM} {why}; use --accel tcg, or auto to use KVM only where it works")


def probe_kvm(binary: Path, kernel: Path, cache: Path, timeout: float = 15.0) -> bool:
    """Can a KVM guest boot here? Boot `kernel` without root and wait for its panic; the answer is cached per
    host kernel and QEMU version (a hanging KVM guest costs the whole timeout once)."""
    if not kvm_usable():
        return False
    key = f"{platform.release()}|{qemu_version(binary)}"
    record = cache / "kvm-probe.json"
    try:
        saved = json.loads(record.read_text())
        if saved.get("key") == key:
            return bool(saved["ok"])
    except (OSError, ValueError, KeyError):
        pass
    spec = QemuSpec(binary, accel="kvm", memory_mib=256, kernel=kernel, append="console=ttyS0 panic=-1")
    start = time.monotonic()
    try:
        ok = KVM_PROBE_MARK in run(qemu_argv(spec), check=False, timeout=timeout).stdout
    except CommandFailed:  # timed out
        ok = False
    saved = {"key": key, "ok": ok, "seconds": round(time.monotonic() - start, 1)}
    write_file(record, (json.dumps(saved) + "\n").encode(), 0o644)
    return ok
