"""boot-test with a real root (the Debian image of `netbootgen image build`, or a user's image): the root it
serves (a copy, the user's image through a copy-on-write overlay, or the image itself with --persist), the stages
after root-mounted, and the host's checks once QEMU has exited, without mounting: a clean file system and the
check unit's files byte for byte."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from netbootgen.aoe.cow import HEADER_SIZE, SECTOR, map_path
from netbootgen.emulate.console import Stage
from netbootgen.errors import InputError
from netbootgen.image.build import DEFAULT_SIZE, build_image, copy_image
from netbootgen.image.inspect import fs_state, read_file
from netbootgen.image.recipe import CHECK_ARG, CHECK_DIR, CHECK_MARKER, MULTI_USER_MARKER, check_data
from netbootgen.inventory import Inventory, Machine
from netbootgen.run import need_binary, run

Progress = Callable[[str], None]

# After root-mounted: the initrd hands over, the root's systemd starts, reaches multi-user, the check unit
# reports, and the kernel powers the machine off once systemd has stopped everything.
REAL_ROOT_STAGES = [
    Stage("switch-root", re.compile(r"Switch Root\.\.\.|Switching root")),
    # the root's own systemd greets with its os-release name (dracut 059's initrd says "... (Initramfs)",
    # dracut-ng's "Welcome to dracut!")
    Stage("systemd", re.compile(r"Welcome to (?![^\r\n]*(?:Initramfs|dracut))[^\r\n]*!")),
    Stage("multi-user", re.compile(r"Reached target[^\r\n]*Multi-User System|" + MULTI_USER_MARKER + " active")),
    Stage("check", re.compile(re.escape(CHECK_MARKER) + r" boot=\d+")),
    Stage("shutdown", re.compile(r"reboot: Power down")),
]


@dataclass(frozen=True)
class RealRoot:
    image: Path  # what the AoE target serves (the read-only base when overlay is set)
    overlay: Path | None  # copy-on-write overlay in the work folder: the image is never written
    fstype: str
    source: str  # "debian" or the user's image


@dataclass(frozen=True)
class RootCheck:
    clean: bool
    fs_detail: str
    boots: int | None  # the check unit's boot counter on the disk
    data_ok: bool  # CHECK_DIR/data holds exactly what that boot wrote

    @property
    def ok(self) -> bool:
        return self.clean and self.data_ok

    def to_json(self) -> dict[str, Any]:
        return {"clean": self.clean, "fs": self.fs_detail, "boots": self.boots, "data_ok": self.data_ok}


def with_check(inv: Inventory, m: Machine) -> Inventory:
    """`inv` with CHECK_ARG added to `m`'s kernel command line (the image's check unit runs only with it)."""
    if CHECK_ARG in m.kernel_args:
        return inv
    machines = {**inv.machines, m.name: replace(m, kernel_args=(*m.kernel_args, CHECK_ARG))}
    return replace(inv, machines=machines)


def prepare_root(inv: Inventory, m: Machine, work: Path, cache: Path, progress: Progress, *,
                 root_image: Path | None, persist: bool, size: int = DEFAULT_SIZE) -> RealRoot:
    """The root boot-test serves: the machine's Debian image (built or from the cache, a sparse copy in `work`),
    or `root_image`, served through a copy-on-write overlay in `work` unless `persist`."""
    if root_image is None:
        built = build_image(inv, m.name, cache, size=size, progress=progress)
        how = "cached" if built.cached else f"built in {built.seconds:.1f} s"
        progress(f"Debian root image {built.path.name} ({how}); sparse copy for this boot")
        return RealRoot(copy_image(built.path, work / "root.img"), None, m.fstype, "debian")
    if not root_image.is_file():
        raise InputError(f"--root-image: {root_image} is not a file")
    if persist:
        return RealRoot(root_image.resolve(), None, m.fstype, os.fspath(root_image))
    overlay = work / "root.cow"
    for stale in (overlay, map_path(overlay)):
        stale.unlink(missing_ok=True)
    return RealRoot(root_image.resolve(), overlay, m.fstype, os.fspath(root_image))


def merged_view(root: RealRoot, dest: Path) -> Path:
    """The disk as the guest left it: the image itself, or (with an overlay) a sparse copy of the base with the
    overlay's sectors laid over it, at `dest`."""
    if root.overlay is None:
        return root.image
    run([need_binary("cp"), "--sparse=always", root.image, dest])
    mp = map_path(root.overlay)
    if not mp.exists():
        return dest  # the target never wrote
    bitmap = mp.read_bytes()[HEADER_SIZE:]
    with root.overlay.open("rb") as src, dest.open("r+b") as out:
        for i, byte in enumerate(bitmap):
            if not byte:
                continue
            for bit in range(8):
                if byte >> bit & 1:
                    pos = (i * 8 + bit) * SECTOR
                    src.seek(pos)
                    out.seek(pos)
                    out.write(src.read(SECTOR))
    return dest


def check_root(root: RealRoot, work: Path) -> RootCheck:
    """What the host proves after the guest powered off, without mounting the root."""
    disk = merged_view(root, work / "merged.img")
    state = fs_state(disk, root.fstype)
    boots_raw = read_file(disk, root.fstype, f"/{CHECK_DIR}/boots")
    boots = int(boots_raw) if boots_raw and boots_raw.strip().isdigit() else None
    data = read_file(disk, root.fstype, f"/{CHECK_DIR}/data")
    data_ok = boots is not None and data == check_data(boots)
    if disk != root.image:
        disk.unlink(missing_ok=True)
    return RootCheck(state.clean, state.detail, boots, data_ok)


def console_boot(console: str) -> int | None:
    """The boot number the check unit reported on the console."""
    m = re.search(re.escape(CHECK_MARKER) + r" boot=(\d+)", console)
    return int(m.group(1)) if m else None
