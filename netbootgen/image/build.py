"""`netbootgen image build`: a machine's Debian root image, made once per set of inputs and kept in the cache
(`image/debian-<machine>-<fstype>-<key>.img`, key over the recipe, size, apt sources and mmdebstrap's version);
the three most recently used of each machine and fstype are kept."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from netbootgen.cache import KEY, prune
from netbootgen.image.debian import bootstrap, install_files, mirror_source, mmdebstrap_version
from netbootgen.image.fs import check_size, make_fs_image
from netbootgen.image.recipe import Recipe, debian_recipe
from netbootgen.inventory import Inventory
from netbootgen.modules.dracut_module import render_module
from netbootgen.run import need_binary, run

DEFAULT_SIZE = 1 << 30
KEEP = 3

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ImageResult:
    path: Path
    fstype: str
    cached: bool
    seconds: float
    size: int  # bytes the file system holds
    allocated: int  # bytes on disk (sparse)


def image_key(recipe: Recipe, size: int) -> str:
    mirror = mirror_source()
    source = Path(mirror).read_text() if Path(mirror).is_file() else mirror
    h = hashlib.sha256()
    for part in (recipe.describe(), str(size), source, mmdebstrap_version()):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def cache_name(recipe: Recipe, key: str) -> str:
    return f"debian-{recipe.machine}-{recipe.fstype}-{key}.img"


def _result(path: Path, fstype: str, cached: bool, seconds: float) -> ImageResult:
    st = path.stat()
    return ImageResult(path, fstype, cached, seconds, st.st_size, st.st_blocks * 512)


def build_image(inv: Inventory, machine: str | None, cache: Path, *, size: int = DEFAULT_SIZE,
                progress: Progress = lambda msg: None) -> ImageResult:
    """The Debian root image of `machine` (default: the first), from the cache when its inputs are unchanged."""
    m = inv.machine(machine)
    recipe = debian_recipe(inv, m, render_module(inv))
    check_size(m.fstype, size)
    final = cache / "image" / cache_name(recipe, image_key(recipe, size))
    if final.exists():
        os.utime(final)
        return _result(final, m.fstype, True, 0.0)
    start = time.monotonic()
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=final.parent) as tmp:
        tree = Path(tmp) / "root"
        progress(f"image {m.name}: Debian {recipe.suite} ({recipe.variant} + {', '.join(recipe.packages)}) "
                 "with mmdebstrap ...")
        bootstrap(recipe, tree, cache / "apt" / "archives", progress)
        install_files(recipe, tree)
        progress(f"image {m.name}: {m.fstype} image of {size >> 20} MiB (no mount) ...")
        out = Path(tmp) / "root.img"
        make_fs_image(tree, m.fstype, size, out)
        os.replace(out, final)
    remove_stale(recipe, cache)
    return _result(final, m.fstype, False, time.monotonic() - start)


def remove_stale(recipe: Recipe, cache: Path, keep: int = KEEP) -> list[Path]:
    """Drop all but the `keep` most recently used cached images of the same machine and fstype."""
    return prune(cache / "image", cache_name(recipe, KEY), keep)


def copy_image(src: Path, dest: Path) -> Path:
    """A sparse copy of `src` at `dest` (written beside it, then renamed into place)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    run([need_binary("cp"), "--sparse=always", src, tmp])
    os.replace(tmp, dest)
    return dest


__all__ = ["DEFAULT_SIZE", "ImageResult", "build_image", "copy_image"]
