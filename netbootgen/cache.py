"""Where netbootgen keeps downloaded and built artefacts between runs."""

from __future__ import annotations

import os
import re
from pathlib import Path

KEY = "KEY"  # stands for the 16-hex-digit input digest in a cached file's name


def cache_dir() -> Path:
    """$NETBOOTGEN_CACHE, else $XDG_CACHE_HOME/netbootgen, else ~/.cache/netbootgen."""
    env = os.environ.get("NETBOOTGEN_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "netbootgen"


def prune(folder: Path, name: str, keep: int) -> list[Path]:
    """Remove all but the `keep` most recently used files of `folder` whose names are `name` with its KEY
    replaced by a 16-hex-digit digest (the other builds of the same thing); return what was removed."""
    pattern = re.compile(re.escape(name).replace(KEY, "[0-9a-f]{16}"))
    same = [f for f in folder.glob("*") if pattern.fullmatch(f.name)]
    same.sort(key=lambda f: f.stat().st_mtime, reverse=True)
    for old in same[keep:]:
        old.unlink(missing_ok=True)
    return same[keep:]
