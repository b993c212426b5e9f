"""Rewrite tests/data/expected/ from tests/data/fleet.toml with the current generators.

    python tests/regen_golden.py        (or .venv/bin/python tests/regen_golden.py)

Run it after an intended change to what netbootgen generates, then review `git diff tests/data/expected/`
and commit the new tree with the change. Safe to re-run at any time: the tree is rendered into a new folder
that then replaces the old one, so files the generators no longer produce disappear too.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
FLEET = DATA / "fleet.toml"
EXPECTED = DATA / "expected"

if __name__ == "__main__":  # run as a script from anywhere: import this checkout's netbootgen
    sys.path.insert(0, str(DATA.parent.parent))

from netbootgen.generate import render_inventory  # noqa: E402
from netbootgen.inventory import load_inventory  # noqa: E402
from netbootgen.output import write_tree  # noqa: E402


def render_golden(out: Path) -> None:
    """Render tests/data/fleet.toml into `out` exactly as `netbootgen render fleet.toml --out OUT` does."""
    write_tree(out, render_inventory(load_inventory(FLEET)))


def main() -> int:
    with tempfile.TemporaryDirectory(prefix=".expected.", dir=DATA) as tmp:
        fresh = Path(tmp) / "expected"
        render_golden(fresh)
        if EXPECTED.exists():
            shutil.rmtree(EXPECTED)
        fresh.rename(EXPECTED)
    files = sorted(p.relative_to(EXPECTED).as_posix() for p in EXPECTED.rglob("*") if p.is_file())
    print(f"wrote {len(files)} files to {EXPECTED} from {FLEET.name}; review them with: git diff -- {EXPECTED}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
