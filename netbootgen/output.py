"""The one writer: atomic writes, explicit modes, unchanged files left alone, a manifest of what was written."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from netbootgen.render import FileTree, RenderedFile

MANIFEST = "manifest.json"


@dataclass
class WriteReport:
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to a temporary file beside `path`, set `mode`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o755)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _entry(f: RenderedFile) -> dict[str, str]:
    return {"sha256": hashlib.sha256(f.text.encode()).hexdigest(), "mode": f"{f.mode:04o}"}


def write_tree(out: Path, files: FileTree, *, prune: bool = False) -> WriteReport:
    """Write every file of `files` under `out`; rewrite only what changed. Files that the previous manifest
    listed and `files` no longer has are removed with `prune`, else reported as stale and kept in the manifest."""
    report = WriteReport()
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST
    previous: dict[str, dict[str, str]] = {}
    if manifest_path.exists():
        try:
            previous = dict(json.loads(manifest_path.read_text())["files"])
        except (ValueError, KeyError, TypeError):
            previous = {}
    entries = {}
    for rel, f in sorted(files.items()):
        path = out / rel
        data = f.text.encode()
        entries[rel] = _entry(f)
        try:
            same = (path.stat().st_mode & 0o7777) == f.mode and path.read_bytes() == data
        except FileNotFoundError:
            same = False
        if same:
            report.unchanged.append(rel)
        else:
            write_file(path, data, f.mode)
            report.written.append(rel)
    for rel in sorted(previous.keys() - files.keys()):
        if prune:
            (out / rel).unlink(missing_ok=True)
            report.removed.append(rel)
        else:
            report.stale.append(rel)
            entries[rel] = previous[rel]
    manifest = (json.dumps({"files": dict(sorted(entries.items()))}, indent=2) + "\n").encode()
    if not (manifest_path.exists() and manifest_path.read_bytes() == manifest):
        write_file(manifest_path, manifest, 0o644)
    return report
