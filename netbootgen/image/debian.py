"""Run mmdebstrap: a Debian root tree from a Recipe, with the downloaded packages kept in the cache."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

from netbootgen.errors import CommandFailed, InputError
from netbootgen.image.recipe import Recipe
from netbootgen.run import need_binary, run, spawn

SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
DEFAULT_MIRROR = "http://deb.debian.org/debian"

Progress = Callable[[str], None]


def mirror_source() -> str:
    """The apt source mmdebstrap uses: this machine's Debian sources file (its mirror, proxy-friendly), else
    deb.debian.org."""
    for path in SOURCES:
        if path.is_file() and path.stat().st_size > 0:
            return os.fspath(path)
    return DEFAULT_MIRROR


def mmdebstrap_version() -> str:
    return run([need_binary("mmdebstrap"), "--version"], capture=True).stdout.strip()


def mmdebstrap_argv(recipe: Recipe, tree: Path, apt_cache: Path, mirror: str) -> list[str]:
    """mmdebstrap as root, into the directory `tree`; .debs come from and go back to `apt_cache`."""
    cache = shlex.quote(os.fspath(apt_cache))
    return [
        os.fspath(need_binary("mmdebstrap")),
        "--mode=root",
        f"--variant={recipe.variant}",
        "--include=" + ",".join(recipe.packages),
        *[f"--dpkgopt={o}" for o in recipe.dpkg_options],
        # packages already in the cache are not downloaded again; the hooks copy them in and back out
        "--skip=download/empty",
        "--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives && "
        f"find {cache} -maxdepth 1 -name '*.deb' -exec cp -t \"$1\"/var/cache/apt/archives {{}} +",
        f"--customize-hook=find \"$1\"/var/cache/apt/archives -maxdepth 1 -name '*.deb' -exec cp -n -t {cache} {{}} +",
        "--customize-hook=rm -f \"$1\"/var/cache/apt/archives/*.deb",
        recipe.suite,
        os.fspath(tree),
        mirror,
    ]  # fmt: skip


def bootstrap(recipe: Recipe, tree: Path, apt_cache: Path, progress: Progress) -> None:
    """Make the Debian root of `recipe` in `tree` (which must not exist), relaying mmdebstrap's steps."""
    if os.geteuid() != 0:
        raise InputError("image build runs mmdebstrap as root (the image keeps the files' owners): run it as root")
    apt_cache.mkdir(parents=True, exist_ok=True)
    argv = mmdebstrap_argv(recipe, tree, apt_cache, mirror_source())
    proc = spawn(argv, output=subprocess.PIPE)
    assert proc.stdout is not None
    lines: list[str] = []
    for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip()
        lines.append(line)
        if line.startswith("I: "):
            progress("mmdebstrap: " + line[3:])
    status = proc.wait()
    if status != 0:
        tail = "\n".join(lines[-25:])
        raise CommandFailed(f"command failed with exit status {status}: {shlex.join(argv)}\n{tail}")


def install_files(recipe: Recipe, tree: Path) -> None:
    """Write the recipe's own files and symlinks into the root tree."""
    for name, f in sorted(recipe.files.items()):
        dest = tree / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)
        dest.write_text(f.text)
        dest.chmod(f.mode)
    for name, target in recipe.symlinks:
        dest = tree / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink() or dest.exists():
            dest.unlink()
        dest.symlink_to(target)
