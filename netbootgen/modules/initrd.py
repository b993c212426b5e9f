"""Build an initrd with dracut (the system's, or dracut-ng built into the cache: dracut_ng.py) and the rendered
95aoe module, without touching /usr/lib/dracut."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from netbootgen.cache import KEY, prune
from netbootgen.inventory import Profile
from netbootgen.kernel.fetch import KernelTree
from netbootgen.modules.dracut_module import MODULE_DIR
from netbootgen.modules.dracut_ng import Dracut, find_dracut
from netbootgen.render import FileTree
from netbootgen.run import run

# Kernel drivers every AoE-root initrd needs besides the profile's NIC drivers and root file systems.
BASE_DRIVERS = ("aoe",)
# Cached initrds kept per profile, kernel and flavour.
KEEP = 3
# The fsck helpers of each root file-system module, as dracut's fs-lib picks them for a host-only build; without
# --fscks a generic build carries every fsck on the build host (xfs_db and xfs_repair in an ext4 fleet's initrd).
FSCK_HELPERS = {
    "ext4": ("e2fsck", "fsck.ext4"),
    "xfs": ("xfs_db", "xfs_repair", "xfs_check", "xfs_metadump", "fsck.xfs"),
}


@dataclass(frozen=True)
class InitrdSpec:
    profile: str  # names the cached file, so that each profile's newest initrds are kept
    kernel: KernelTree
    module: FileTree  # the 95aoe files, keyed "dracut/95aoe/<name>"
    drivers: tuple[str, ...]  # NIC drivers
    systemd: bool = True  # systemd initrd, or dracut's shell-only initrd (--omit systemd)
    filesystems: tuple[str, ...] = ("ext4",)  # root file-system modules (fleet.fs_modules)
    dracut: str = "system"  # "system" (Debian 12: dracut 059) or "ng" (dracut-ng 106, built into the cache)
    compress: str | None = None  # dracut --compress (gzip, zstd, xz, lz4, ...); None: that dracut's default

    @classmethod
    def for_profile(cls, kernel: KernelTree, files: FileTree, profile: Profile, *, systemd: bool,
                    filesystems: tuple[str, ...] = ("ext4",), dracut: str = "system",
                    compress: str | None = None) -> InitrdSpec:
        """The initrd of `profile`: the rendered 95aoe files out of `files`, the profile's NIC drivers and the
        file-system modules of its machines' roots."""
        module = {k: v for k, v in files.items() if k.startswith(f"dracut/{MODULE_DIR}/")}
        return cls(profile.name, kernel, module, tuple(d for d, _ in profile.nic_drivers), systemd=systemd,
                   filesystems=filesystems, dracut=dracut, compress=compress)

    def all_drivers(self) -> list[str]:
        bus = {"virtio_pci"} if "virtio_net" in self.drivers else set()
        return sorted(set(BASE_DRIVERS) | set(self.filesystems) | set(self.drivers) | bus)

    def fscks(self) -> list[str] | None:
        """dracut --fscks for the root file systems; None (dracut's own choice) when one is not in FSCK_HELPERS."""
        if not all(fs in FSCK_HELPERS for fs in self.filesystems):
            return None
        return [h for fs in sorted(self.filesystems) for h in FSCK_HELPERS[fs]]

    def key(self, dracut_version: str) -> str:
        """A digest of everything the initrd depends on (`dracut_version`: the version line of the dracut that
        builds it): reuse a cached build only when nothing changed."""
        h = hashlib.sha256()
        for part in (self.kernel.version, " ".join(self.all_drivers()), str(self.systemd), self.dracut,
                     dracut_version, *([f"compress={self.compress}"] if self.compress else []),
                     f"fscks={' '.join(self.fscks() or ['(dracut)'])}"):
            h.update(part.encode() + b"\0")
        for name, f in sorted(self.module.items()):
            h.update(name.encode() + b"\0" + f.text.encode() + b"\0")
        return h.hexdigest()[:16]


def dracut_argv(spec: InitrdSpec, out: Path, binary: Path) -> list[str]:
    kver = spec.kernel.version
    return [
        os.fspath(binary),
        "--force", "--no-hostonly", "--no-hostonly-cmdline", "--no-early-microcode",
        "--kver", kver,
        "--kmoddir", os.fspath(spec.kernel.moddir),
        "--modules", "dracut-systemd aoe dash" if spec.systemd else "aoe dash",
        *(["--omit", "systemd"] if not spec.systemd else []),
        *(["--compress", spec.compress] if spec.compress else []),
        *(["--fscks", " ".join(fscks)] if (fscks := spec.fscks()) else []),
        "--drivers", " ".join(spec.all_drivers()),
        os.fspath(out),
    ]  # fmt: skip


def private_dracut(base: Path, module: FileTree, source: Path) -> Path:
    """A dracut base dir of symlinks to dracut's (`source`, e.g. /usr/lib/dracut) plus the rendered 95aoe module."""
    (base / "modules.d").mkdir(parents=True)
    for entry in sorted(source.iterdir()):
        if entry.name != "modules.d":
            (base / entry.name).symlink_to(entry)
    for mod in sorted((source / "modules.d").iterdir()):
        if mod.name[2:] != "aoe":
            (base / "modules.d" / mod.name).symlink_to(mod)
    for name, f in module.items():
        dest = base / "modules.d" / Path(name).relative_to("dracut")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(f.text)
        dest.chmod(f.mode)
    return base


@dataclass(frozen=True)
class InitrdResult:
    path: Path
    cached: bool
    seconds: float
    size: int


def cache_name(spec: InitrdSpec, key: str) -> str:
    ng = "-ng" if spec.dracut == "ng" else ""
    return f"initrd-{spec.profile}-{spec.kernel.version}-{'systemd' if spec.systemd else 'shell'}{ng}-{key}.img"


def build_initrd(spec: InitrdSpec, cache: Path) -> InitrdResult:
    """Build (or reuse) the initrd for `spec`; the result lives in the cache, keyed by spec.key().
    dracut-ng is fetched and built into the cache first when `spec.dracut` is "ng" and it is not there yet."""
    dracut: Dracut = find_dracut(spec.dracut, cache)
    final = cache / "initrd" / cache_name(spec, spec.key(dracut.version()))
    if final.exists():
        os.utime(final)  # the newest used are kept (remove_stale)
        return InitrdResult(final, True, 0.0, final.stat().st_size)
    final.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=".dracut-", dir=final.parent) as tmp:
        base = private_dracut(Path(tmp) / "dracut", spec.module, dracut.basedir)
        out = Path(tmp) / "initrd.img"
        env = {"dracutbasedir": os.fspath(base), "TMPDIR": tmp}
        run(dracut_argv(spec, out, dracut.binary), env=env)
        out.chmod(0o644)
        os.replace(out, final)
    return InitrdResult(final, False, time.monotonic() - start, final.stat().st_size)


def remove_stale(spec: InitrdSpec, cache: Path, keep: int = KEEP) -> list[Path]:
    """Drop all but the `keep` most recently used cached initrds of the same profile, kernel and flavour (the
    cache would otherwise grow with every change); other profiles' initrds are never touched."""
    return prune(cache / "initrd", cache_name(spec, KEY), keep)


__all__ = ["InitrdSpec", "InitrdResult", "build_initrd", "dracut_argv", "remove_stale"]
