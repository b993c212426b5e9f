"""Fetch a Debian kernel package and unpack it into the cache (never installed on the host)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from netbootgen.errors import NetbootgenError
from netbootgen.inventory import Profile
from netbootgen.run import run

META_PACKAGE = "linux-image-amd64"
APT_LISTS = Path("/var/lib/apt/lists")
KVER_RE = re.compile(r"^[0-9]+\.[0-9]+(\.[0-9]+)?-[0-9A-Za-z.+~-]+$")


@dataclass(frozen=True)
class KernelTree:
    """An unpacked kernel: vmlinuz, its modules (depmod'ed) and its config."""

    version: str
    root: Path

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.version}"

    @property
    def config(self) -> Path:
        return self.root / "boot" / f"config-{self.version}"

    @property
    def moddir(self) -> Path:
        return self.root / "lib" / "modules" / self.version


def apt_lists_state(lists: Path = APT_LISTS) -> str:
    """A digest of the apt package lists' names, sizes and times: it changes when `apt-get update` changes them."""
    h = hashlib.sha256()
    for f in sorted(lists.glob("*_Packages*")) if lists.is_dir() else []:
        st = f.stat()
        h.update(f"{f.name} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def resolve_version(version: str, cache: Path | None = None, lists: Path = APT_LISTS) -> str:
    """'auto' means the version Debian's linux-image-amd64 depends on; anything else is checked and returned.

    With `cache`, apt-cache's answer (0.8 s) is kept there until the package lists change."""
    if version != "auto":
        if not KVER_RE.match(version):
            raise NetbootgenError(f"not a kernel version: {version!r} (expected e.g. 6.1.0-56-amd64)")
        return version
    saved = cache / "kernels" / f"auto-{apt_lists_state(lists)}.version" if cache else None
    if saved and saved.exists() and KVER_RE.match(known := saved.read_text().strip()):
        return known
    out = run(["apt-cache", "depends", META_PACKAGE], capture=True).stdout
    m = re.search(r"Depends:\s*linux-image-(\S+)", out)
    if not m:
        raise NetbootgenError(
            f"cannot tell which kernel {META_PACKAGE} depends on; run 'apt-get update' first\n{out.strip()}"
        )
    if saved:
        saved.parent.mkdir(parents=True, exist_ok=True)
        for old in saved.parent.glob("auto-*.version"):
            old.unlink(missing_ok=True)
        tmp = saved.with_name(f".{saved.name}.{os.getpid()}")
        tmp.write_text(m.group(1) + "\n")
        tmp.rename(saved)
    return m.group(1)


def kernel_cache(cache: Path, version: str) -> Path:
    return cache / "kernels" / version


def fetch_kernel(version: str, cache: Path) -> KernelTree:
    """Download linux-image-VERSION with apt-get, unpack it with dpkg -x and run depmod -b; cached."""
    version = resolve_version(version, cache)
    final = kernel_cache(cache, version)
    tree = KernelTree(version, final)
    if (final / ".complete").exists():
        return tree
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{version}-", dir=final.parent) as tmp:
        work = Path(tmp)
        dl = work / "download"
        dl.mkdir()
        dl.chmod(0o777)  # apt-get download drops privileges to _apt when it can
        run(["apt-get", "download", f"linux-image-{version}"], cwd=dl)
        debs = sorted(dl.glob("*.deb"))
        if not debs:
            raise NetbootgenError(f"apt-get download linux-image-{version} produced no .deb")
        unpacked = work / "root"
        run(["dpkg", "-x", debs[0], unpacked])
        staged = KernelTree(version, unpacked)
        if not staged.vmlinuz.exists() or not staged.moddir.is_dir():
            raise NetbootgenError(f"{debs[0].name} has no {staged.vmlinuz.name} or modules")
        run(["depmod", "-b", unpacked, version])
        (unpacked / ".complete").write_text(debs[0].name + "\n")
        if final.exists():
            shutil.rmtree(final)
        unpacked.rename(final)
    return tree


def local_kernel(path: Path) -> KernelTree:
    """An unpacked kernel tree the user already has: PATH/boot/vmlinuz-VER and PATH/lib/modules/VER (depmod'ed)."""
    versions = sorted(p.name for p in (path / "lib" / "modules").glob("*") if p.is_dir())
    if len(versions) != 1:
        found = ", ".join(versions) or "none"
        raise NetbootgenError(f"kernel_path {path}: expected exactly one lib/modules/<version>, found {found}")
    tree = KernelTree(versions[0], path)
    if not tree.vmlinuz.is_file():
        raise NetbootgenError(f"kernel_path {path}: {tree.vmlinuz} is missing")
    if not (tree.moddir / "modules.dep").is_file():
        raise NetbootgenError(f"kernel_path {path}: no modules.dep; run depmod -b {path} {tree.version}")
    return tree


def profile_kernel(profile: Profile, cache: Path) -> KernelTree:
    """The kernel a profile names: a local tree (kernel_path), or Debian's package (kernel_version)."""
    if profile.kernel_path is not None:
        return local_kernel(Path(profile.kernel_path))
    return fetch_kernel(profile.kernel_version, cache)
