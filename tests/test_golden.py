"""Golden files: rendering tests/data/fleet.toml gives exactly tests/data/expected/ (content and exec bit).

When a change to the generated files is intended, run `python tests/regen_golden.py` and review the diff."""

from __future__ import annotations

import difflib
import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).resolve().parent
HINT = "if the change is intended, run `python tests/regen_golden.py` and review `git diff tests/data/expected`"


def _regen() -> ModuleType:
    """tests/regen_golden.py, loaded by path (tests/ need not be a package)."""
    spec = importlib.util.spec_from_file_location("regen_golden", HERE / "regen_golden.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _files(top: Path) -> dict[str, Path]:
    return {p.relative_to(top).as_posix(): p for p in sorted(top.rglob("*")) if p.is_file()}


def _diff(expected: Path, actual: Path, rel: str, limit: int = 40) -> str:
    try:
        a, b = expected.read_text().splitlines(), actual.read_text().splitlines()
    except UnicodeDecodeError:
        return "    (binary files differ)"
    lines = list(difflib.unified_diff(a, b, f"expected/{rel}", f"rendered/{rel}", lineterm=""))
    more = f"\n    ... {len(lines) - limit} more diff lines" if len(lines) > limit else ""
    return "\n".join("    " + line for line in lines[:limit]) + more


def test_fleet_renders_to_the_golden_files(tmp_path: Path) -> None:
    regen = _regen()
    assert regen.EXPECTED.is_dir(), f"{regen.EXPECTED} is missing; {HINT}"
    out = tmp_path / "rendered"
    regen.render_golden(out)
    expected, actual = _files(regen.EXPECTED), _files(out)
    problems = []
    for rel in sorted(expected.keys() | actual.keys()):
        if rel not in actual:
            problems.append(f"  {rel}: expected but no longer rendered")
        elif rel not in expected:
            problems.append(f"  {rel}: rendered but not in the golden files")
        elif expected[rel].read_bytes() != actual[rel].read_bytes():
            problems.append(f"  {rel}: content differs\n{_diff(expected[rel], actual[rel], rel)}")
        elif os.access(expected[rel], os.X_OK) != os.access(actual[rel], os.X_OK):
            problems.append(f"  {rel}: executable bit differs")
    if problems:
        pytest.fail(f"{len(problems)} file(s) differ from tests/data/expected/:\n" + "\n".join(problems)
                    + f"\n{HINT}", pytrace=False)
