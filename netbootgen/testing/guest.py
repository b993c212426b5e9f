"""A minimal Linux guest to exercise an AoE target under QEMU: busybox plus the aoe and virtio-net modules.

No dracut: `build_initramfs` writes a gzip'ed newc cpio holding a static busybox, the modules (dependencies
resolved from the kernel's modules.dep, in load order) under /mod, and an /init made of `PRELUDE` (mount
/proc, /sys, devtmpfs, load the modules, raise eth0, trigger discovery) followed by the caller's script.
`guest_spec` is the matching QEMU guest (TCG, one vCPU, serial console on stdout, one virtio NIC, or several:
eth0, eth1, ... with MACs `guest_mac(0)`, `guest_mac(1)`, ...; PRELUDE raises them all).
Used by the integration tests and bench/aoe_qemu_bench.py.
"""

from __future__ import annotations

import gzip
import lzma
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from netbootgen.emulate.qemu import QemuSpec
from netbootgen.errors import NetbootgenError
from netbootgen.run import find_binary

GUEST_MODULES = ("virtio_pci", "virtio_net", "aoe")
GUEST_MAC = "52:54:00:12:34:56"

# The caller's script runs after this (wait_dev and up are for it).
PRELUDE = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /mod/order); do insmod "/mod/$m" || echo "GUEST-FAIL insmod $m"; done
for nic in /sys/class/net/eth*; do ip link set "${nic##*/}" up; done
echo > /dev/etherd/discover
wait_dev() {  # DEV SECONDS: wait for a block device, asking for discovery again every second
    i=0
    while [ ! -b "$1" ] && [ $i -lt $(($2 * 10)) ]; do
        sleep 0.1; i=$((i + 1)); [ $((i % 10)) = 0 ] && echo > /dev/etherd/discover
    done
    [ -b "$1" ]
}
up() { cut -d' ' -f1 /proc/uptime; }
"""


def guest_mac(index: int) -> str:
    """The MAC of the guest's NIC number `index` (eth0 = GUEST_MAC, eth1 = ...:57, ...)."""
    last = int(GUEST_MAC[-2:], 16) + index
    if not 0 <= last <= 0xFF:
        raise ValueError(f"NIC {index}: no MAC")
    return f"{GUEST_MAC[:-2]}{last:02x}"


def module_order(moddir: Path, names: Sequence[str]) -> list[str]:
    """Paths (relative to moddir) of `names` and their dependencies, each after what it needs."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    dep_file = moddir / "modules.dep"
    try:
        text = dep_file.read_text()
    except OSError as e:
        raise NetbootgenError(f"cannot read {dep_file}: {e.strerror} (was depmod run?)") from e
    for line in text.splitlines():
        mod, sep, rest = line.partition(":")
        if not sep:
            continue
        deps[mod] = rest.split()
        by_name[_module_name(mod)] = mod
    order: list[str] = []

    def visit(mod: str) -> None:
        if mod in order:
            return
        for dep in deps.get(mod, []):
            visit(dep)
        order.append(mod)

    for name in names:
        mod = by_name.get(name.replace("-", "_"))
        if mod is None:
            raise NetbootgenError(f"kernel module {name} not found in {dep_file}")
        visit(mod)
    return order


def _module_name(path: str) -> str:
    base = os.path.basename(path)
    for suffix in (".ko", ".ko.xz", ".ko.gz"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return base.replace("-", "_")


def _module_bytes(path: Path) -> bytes:
    """An uncompressed .ko (busybox insmod loads only plain modules)."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko"):
        return data
    raise NetbootgenError(f"{path}: unsupported module compression")


def newc_archive(entries: Sequence[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (name, mode, data) entries; char devices carry (major, minor) packed in data."""
    out = bytearray()

    def pad() -> None:
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        rdev = (0, 0)
        if mode & 0o170000 == 0o020000:
            rdev, data = (data[0], data[1]), b""
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        out += b"070701" + "".join(f"{v:08x}" for v in fields).encode() + encoded
        pad()
        out += data
        pad()
    return bytes(out)


def build_initramfs(
    moddir: Path,
    script: str,
    out: Path,
    *,
    modules: Sequence[str] = GUEST_MODULES,
    files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write the initramfs to `out`: busybox, `modules` (with dependencies), PRELUDE + `script` as /init.

    `files` maps further absolute paths in the guest (in existing directories: /, /bin, /mod) to contents.
    """
    busybox = find_binary("busybox")
    if busybox is None:
        raise NetbootgenError("busybox not found (install the Debian package busybox-static)")
    order = module_order(moddir, modules)
    entries: list[tuple[str, int, bytes]] = [
        (d, 0o040755, b"") for d in ("bin", "dev", "proc", "sys", "mod")
    ]
    entries.append(("dev/console", 0o020600, bytes((5, 1))))
    entries.append(("bin/busybox", 0o100755, busybox.read_bytes()))
    names = []
    for rel in order:
        name = _module_name(rel) + ".ko"
        names.append(name)
        entries.append((f"mod/{name}", 0o100644, _module_bytes(moddir / rel)))
    entries.append(("mod/order", 0o100644, ("\n".join(names) + "\n").encode()))
    entries.append(("init", 0o100755, (PRELUDE + script).encode()))
    for path, data in (files or {}).items():
        entries.append((path.lstrip("/"), 0o100644, data))
    out.write_bytes(gzip.compress(newc_archive(entries), 1))
    return out


def guest_spec(
    qemu: Path,
    kernel: Path,
    initrd: Path,
    netdev: str,
    *,
    mac: str = GUEST_MAC,
    mtu: int = 1500,
    memory_mib: int = 256,
    append: str = "",
    more_netdevs: Sequence[str] = (),
    qmp: Path | None = None,
) -> QemuSpec:
    """The guest under QEMU: TCG, one vCPU, quiet kernel on the serial console (stdout), one virtio NIC on
    `netdev` (a -netdev backend without id: emulate.qemu's dgram_netdev, stream_netdev, tap_netdev), and one more
    per `more_netdevs` (eth1, ... with MACs guest_mac(1), ...; netdev ids net1, ...); `qmp`: a QMP socket."""
    return QemuSpec(
        qemu,
        accel="tcg",
        memory_mib=memory_mib,
        kernel=kernel,
        initrd=initrd,
        append=f"console=ttyS0 quiet panic=-1 {append}".strip(),
        netdev=netdev,
        mac=mac,
        host_mtu=mtu,
        nic_rom=False,
        more_nics=tuple((nd, guest_mac(i)) for i, nd in enumerate(more_netdevs, 1)),
        qmp=qmp,
    )
