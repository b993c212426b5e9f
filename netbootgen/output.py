"""The one writer: atomic writes, explicit modes, unchanged files left alone, a manifest of what was written."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from netbootgen.errors import NetbootgenError
from netbootgen.render import FileTree

MANIFEST = "manifest.json"
DIR_MODE = 0o755


@dataclass
class WriteReport:
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)


def make_dirs(path: str | os.PathLike[str]) -> bool:
    """Create `path` and its missing parents with mode 0755 (whatever the umask); existing folders are left
    as they are. True if `path` itself was created (so it is empty)."""
    missing = []
    p = os.fspath(path) or "."
    while not os.path.isdir(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent in ("", p):
            break
        p = parent
    created = False
    for d in reversed(missing):
        try:
            os.mkdir(d, DIR_MODE)
        except FileExistsError:
            if not os.path.isdir(d):
                raise
            created = False
            continue
        os.chmod(d, DIR_MODE)
        created = True
    return created


def _umask() -> int | None:
    """The process umask, read without changing it (Linux >= 4.7); None if unknown."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


class _AtomicWriter:
    """Replaces files atomically: `data` goes to a new temporary file in the target's folder, gets its mode,
    then is renamed over the target, so a reader sees the old file or the new one, never a partial one.
    One writer per batch of files: it reads the pid and the umask once (a 20,000-file render notices)."""

    def __init__(self) -> None:
        self.suffix = f".{os.getpid()}.tmp"
        self.umask = _umask()

    def write(self, path: str, data: bytes, mode: int) -> None:
        """Replace `path` (whose folder must exist) by `data` with `mode`."""
        folder, name = os.path.split(path)
        tmp = os.path.join(folder, f".{name}{self.suffix}")
        # Created with its final mode when the umask lets it through, else fixed with fchmod below.
        exact = self.umask is not None and not mode & self.umask
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode if exact else 0o600)
        except FileExistsError:  # left over by a killed run that had our pid: take a fresh random name
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder or ".")
            exact = False
        try:
            try:
                if not exact:
                    os.fchmod(fd, mode)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to a temporary file beside `path`, set `mode`, then rename it into place."""
    make_dirs(path.parent)
    _AtomicWriter().write(os.fspath(path), data, mode)


def _is_unchanged(path: str, data: bytes, mode: int) -> bool:
    """Is `path` already a regular file with this mode and content? Reads it only when the size matches."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_size != len(data) or stat.S_IMODE(st.st_mode) != mode:
        return False
    with open(path, "rb") as f:
        return f.read() == data


def _is_safe_relative(rel: object) -> bool:
    """A relative path below the output folder: no absolute path, no '.', '..' or empty component."""
    return (
        isinstance(rel, str)
        and rel != MANIFEST
        and not rel.startswith("/")
        and "\\" not in rel
        and all(part not in ("", ".", "..") for part in rel.split("/"))
    )


def _read_manifest(path: str) -> dict[str, dict[str, str]]:
    """The files an earlier render listed (only entries with safe paths), or {} if there is no usable one."""
    try:
        with open(path, "rb") as f:
            files = json.loads(f.read())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if not isinstance(files, dict):
        return {}
    return {rel: e for rel, e in files.items() if _is_safe_relative(rel) and isinstance(e, dict)}


def _remove_empty_folders(folder: str, top: str) -> None:
    """Remove `folder` and its parents up to (not including) `top` while they are empty."""
    while folder != top and folder.startswith(top + os.sep):
        try:
            os.rmdir(folder)
        except OSError:
            return
        folder = os.path.dirname(folder)


def write_tree(out: Path, files: FileTree, *, prune: bool = False) -> WriteReport:
    """Write every file of `files` under `out`; rewrite only what changed. Files that the previous manifest
    listed and `files` no longer has are removed with `prune` (with the folders this empties), else reported
    as stale and kept in the manifest. The manifest (manifest.json, written last) lists each file's sha256
    and mode."""
    for rel in files:
        if not _is_safe_relative(rel):
            raise NetbootgenError(f"internal error: a generator produced the unsafe output path {rel!r}")
    try:
        return _write_tree(os.path.normpath(os.fspath(out)), files, prune)
    except OSError as e:
        where = e.filename if e.filename is not None else out
        raise NetbootgenError(f"cannot write the rendered files under {out}: {where}: {e.strerror}") from e


def _manifest_json(entries: dict[str, dict[str, str]]) -> bytes:
    """{"files": {path: {"sha256": ..., "mode": ...}}}, one file per line, sorted (json's indent= formatting
    takes its slow pure-Python path; this is the C encoder per line)."""
    lines = [f"    {json.dumps(rel)}: {json.dumps(e, sort_keys=True)}" for rel, e in sorted(entries.items())]
    return ("{\n  \"files\": {\n" + ",\n".join(lines) + ("\n" if lines else "") + "  }\n}\n").encode()


def _write_tree(top: str, files: FileTree, prune: bool) -> WriteReport:
    report = WriteReport()
    writer = _AtomicWriter()
    make_dirs(top)
    manifest_path = os.path.join(top, MANIFEST)
    previous = _read_manifest(manifest_path)
    entries: dict[str, dict[str, str]] = {}
    folders: dict[str, bool] = {}  # folder -> created by this run (so it holds only what this run wrote)
    for rel, f in sorted(files.items()):
        path = os.path.join(top, rel)
        data = f.text.encode()
        entries[rel] = {"sha256": hashlib.sha256(data).hexdigest(), "mode": f"{f.mode:04o}"}
        folder = os.path.dirname(path)
        fresh = folders.get(folder)
        if fresh is None:
            fresh = folders[folder] = make_dirs(folder)
        if not fresh and _is_unchanged(path, data, f.mode):
            report.unchanged.append(rel)
            continue
        writer.write(path, data, f.mode)
        report.written.append(rel)
    for rel in sorted(previous.keys() - files.keys()):
        path = os.path.join(top, rel)
        if not os.path.lexists(path):
            continue  # gone already: forget it
        if prune:
            os.unlink(path)
            report.removed.append(rel)
            _remove_empty_folders(os.path.dirname(path), top)
        else:
            report.stale.append(rel)
            entries[rel] = previous[rel]
    manifest = _manifest_json(entries)
    if not _is_unchanged(manifest_path, manifest, 0o644):
        writer.write(manifest_path, manifest, 0o644)
    return report
