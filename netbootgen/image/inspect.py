"""Read a root image without mounting it: is its file system clean (unmounted properly), and what a file holds
(debugfs for ext4; xfs_db block maps for xfs)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from netbootgen.run import need_binary, run


@dataclass(frozen=True)
class FsState:
    clean: bool
    detail: str  # what the tool said, in one line


def fs_state(image: Path, fstype: str) -> FsState:
    """ext4: `dumpe2fs -h` says 'clean' and there is no needs_recovery; xfs: `xfs_repair -n` finds nothing and
    the log is clean (no metadata changes waiting in it)."""
    if fstype == "xfs":
        proc = run([need_binary("xfs_repair"), "-n", image], check=False, capture=True)
        text = proc.stdout + proc.stderr
        dirty_log = "log" in text.lower() and ("replay" in text.lower() or "ALERT" in text)
        if proc.returncode == 0 and not dirty_log:
            return FsState(True, "xfs_repair -n: no problems, log clean")
        first = next((ln for ln in text.splitlines() if "log" in ln.lower() or "ERROR" in ln), text.strip())
        return FsState(False, f"xfs_repair -n (exit status {proc.returncode}): {first.strip()[:200]}")
    proc = run([need_binary("dumpe2fs"), "-h", image], check=False, capture=True)
    state = re.search(r"^Filesystem state:\s*(.*)$", proc.stdout, re.M)
    features = re.search(r"^Filesystem features:\s*(.*)$", proc.stdout, re.M)
    state_text = state.group(1).strip() if state else "unknown"
    recovery = bool(features and "needs_recovery" in features.group(1).split())
    clean = proc.returncode == 0 and state_text == "clean" and not recovery
    detail = f"dumpe2fs -h: state {state_text}" + (", needs_recovery (the journal was not closed)" if recovery else "")
    return FsState(clean, detail)


def read_file(image: Path, fstype: str, path: str) -> bytes | None:
    """The contents of the regular file `path` (absolute, in the image), None if it is not there."""
    if fstype == "xfs":
        return _xfs_read(image, path)
    proc = run([need_binary("debugfs"), "-R", f"stat {path}", image], check=False, capture=True)
    if proc.returncode != 0 or "Type: regular" not in proc.stdout:
        return None
    return _debugfs_cat(image, path)


def _debugfs_cat(image: Path, path: str) -> bytes:
    """debugfs dump to a file beside the image (binary-safe, unlike reading `cat` as text)."""
    dest = image.with_name(f".{image.name}.read")
    try:
        run([need_binary("debugfs"), "-R", f"dump {path} {dest}", image], capture=True)
        return dest.read_bytes()
    finally:
        dest.unlink(missing_ok=True)


def _xfs_db(image: Path, *commands: str) -> str:
    argv: list[str | Path] = [need_binary("xfs_db"), "-r"]
    for c in commands:
        argv += ["-c", c]
    return run([*argv, image], capture=True, check=False).stdout


def _xfs_read(image: Path, path: str) -> bytes | None:
    out = _xfs_db(image, f"path {path}", "print core.mode core.size", "bmap")
    mode = re.search(r"core\.mode = 0?(\d+)", out)
    size = re.search(r"core\.size = (\d+)", out)
    if not mode or not size or not mode.group(1).startswith("10"):  # 0100644: a regular file
        return None
    length = int(size.group(1))
    data = bytearray(length)
    block = int(re.search(r"blocksize = (\d+)", _xfs_db(image, "sb 0", "print blocksize")).group(1))  # type: ignore[union-attr]
    with image.open("rb") as f:
        for m in re.finditer(r"data offset (\d+) startblock (\d+) \(\S+\) count (\d+)", out):
            off, start, count = (int(x) for x in m.groups())
            conv = _xfs_db(image, f"convert fsb {start} byte")
            byte = int(re.search(r"\((\d+)\)", conv).group(1))  # type: ignore[union-attr]
            f.seek(byte)
            chunk = f.read(count * block)
            begin = off * block
            data[begin:begin + len(chunk)] = chunk[: max(0, length - begin)]
    return bytes(data)
