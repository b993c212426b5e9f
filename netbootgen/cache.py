"""Where netbootgen keeps downloaded and built artefacts between runs."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$NETBOOTGEN_CACHE, else $XDG_CACHE_HOME/netbootgen, else ~/.cache/netbootgen."""
    env = os.environ.get("NETBOOTGEN_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "netbootgen"
