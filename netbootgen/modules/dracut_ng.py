"""Which dracut builds the initrd: the system's (Debian 12: dracut 059) or dracut-ng 106 (Debian 13's), built
from Debian's trixie source into the cache and never installed on the host.

dracut-ng is fetched through a private apt configuration (`<cache>/apt-trixie`: its own sources.list with one
`deb-src ... trixie main` line, package lists and archive cache; the system's sources are not read or changed),
with `apt-get source --download-only dracut`; only the upstream tarball `dracut_106.orig.tar.gz` is used (apt
has checked it against the signed Sources index). It is configured for /usr, built with make (needs gcc,
pkg-config and libkmod-dev) and installed with DESTDIR into `<cache>/dracut/ng-106/`. Building is idempotent:
a finished tree carries `.complete` and is reused.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from netbootgen.errors import NetbootgenError
from netbootgen.run import need_binary, run

NG_VERSION = "106"
DRACUT_NAMES = {"system": "the system's dracut", "ng": f"dracut-ng {NG_VERSION}"}
DRACUTS = tuple(DRACUT_NAMES)
NG_SUITE = "trixie"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SYSTEM_BASE = Path("/usr/lib/dracut")
_URI_RE = re.compile(r"^(?:deb(?:-src)?\s+(?:\[[^]]*\]\s+)?|URIs:\s*)(\S+/debian)/?(?:\s|$)", re.MULTILINE)


@dataclass(frozen=True)
class Dracut:
    """A dracut to run: its script, its base dir (modules.d, dracut-install, ...) and a version line."""

    name: str  # "system" or "ng"
    binary: Path
    basedir: Path

    def version(self) -> str:
        """dracut's version line (dracut --version exits 1 on Debian's 059, so its status is not checked)."""
        proc = run(
            [self.binary, "--version"], capture=True, check=False, env={"dracutbasedir": os.fspath(self.basedir)}
        )
        return (proc.stdout + proc.stderr).strip()


def system_dracut() -> Dracut:
    return Dracut("system", need_binary("dracut"), SYSTEM_BASE)


def ng_root(cache: Path) -> Path:
    return cache / "dracut" / f"ng-{NG_VERSION}"


def _ng(root: Path) -> Dracut:
    return Dracut("ng", root / "usr" / "bin" / "dracut", root / "usr" / "lib" / "dracut")


def find_dracut(name: str, cache: Path) -> Dracut:
    """The dracut called `name` ("system" or "ng"); dracut-ng is fetched and built on first use."""
    if name == "system":
        return system_dracut()
    if name == "ng":
        return fetch_dracut_ng(cache)
    raise NetbootgenError(f"unknown dracut {name!r} (expected {' or '.join(DRACUTS)})")


def debian_mirror(sources: tuple[Path, ...] = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))) -> str:
    """The Debian archive the system's apt uses (the first .../debian URI of its sources), else deb.debian.org."""
    for top in sources:
        files = sorted(top.glob("*.list")) + sorted(top.glob("*.sources")) if top.is_dir() else [top]
        for f in files:
            try:
                text = f.read_text(errors="replace")
            except OSError:
                continue
            for m in _URI_RE.finditer(text):
                return m.group(1)
    return DEFAULT_MIRROR


def apt_options(aptdir: Path) -> list[str]:
    """apt-get options that read only the private configuration under `aptdir`."""
    return [
        "-o", f"Dir::Etc::SourceList={aptdir / 'sources.list'}",
        "-o", "Dir::Etc::SourceParts=/dev/null",
        "-o", f"Dir::State::Lists={aptdir / 'lists'}",
        "-o", f"Dir::Cache={aptdir / 'cache'}",
        "-o", "APT::Sandbox::User=root",  # the cache may sit in a home directory _apt cannot enter
    ]  # fmt: skip


def fetch_ng_source(cache: Path, dest: Path, mirror: str | None = None) -> Path:
    """Download dracut-ng's upstream tarball from Debian trixie into `dest`; returns its path."""
    aptdir = cache / "apt-trixie"
    for sub in ("lists/partial", "cache/archives/partial"):
        (aptdir / sub).mkdir(parents=True, exist_ok=True)
    line = f"deb-src [signed-by={KEYRING}] {mirror or debian_mirror()} {NG_SUITE} main\n"
    (aptdir / "sources.list").write_text(line)
    opts = apt_options(aptdir)
    run(["apt-get", "-q", *opts, "update"])
    # Only the orig tarball is needed; a mirror without the .dsc or the Debian tarball makes apt-get fail after
    # the tarball was fetched (and checked), so its status is judged by what it left.
    proc = run(["apt-get", "-q", *opts, "source", "--download-only", "dracut"], cwd=dest, capture=True, check=False)
    tarballs = sorted(dest.glob(f"dracut_{NG_VERSION}.orig.tar.*"))
    if not tarballs:
        found = ", ".join(p.name for p in dest.iterdir()) or "nothing"
        raise NetbootgenError(
            f"apt-get source dracut ({NG_SUITE}) gave no dracut_{NG_VERSION}.orig.tar.* (got {found}):\n"
            + (proc.stdout + proc.stderr)[-2000:]
        )
    return tarballs[0]


def fetch_dracut_ng(cache: Path, mirror: str | None = None) -> Dracut:
    """dracut-ng NG_VERSION in `cache`: fetched and built once, then reused."""
    final = ng_root(cache)
    if (final / ".complete").exists():
        return _ng(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".ng-{NG_VERSION}-", dir=final.parent) as tmp:
        work = Path(tmp)
        dl = work / "download"
        dl.mkdir()
        tarball = fetch_ng_source(cache, dl, mirror)
        src = work / "src"
        src.mkdir()
        run(["tar", "-xf", tarball, "-C", src, "--strip-components=1"])
        run(["./configure", "--prefix=/usr", "--disable-documentation"], cwd=src)
        run(["make", f"-j{os.cpu_count() or 1}"], cwd=src)
        stage = work / "root"
        run(["make", "install", f"DESTDIR={stage}"], cwd=src)
        built = _ng(stage)
        for need in (built.binary, built.basedir / "dracut-install", built.basedir / "modules.d" / "99base"):
            if not need.exists():
                raise NetbootgenError(f"dracut-ng {NG_VERSION} built without {need.relative_to(stage)}")
        (stage / ".complete").write_text(f"{tarball.name}\n")
        if final.exists():
            shutil.rmtree(final)
        stage.rename(final)
    return _ng(final)
