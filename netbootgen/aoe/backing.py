"""Which stored bytes an open export file descriptor reaches: `storage_of(fd)` -> (identity, byte origin).

Two exports write the same bytes when they reach the same storage at overlapping byte ranges, whatever the
path they were opened by: a file and a loop device backed by it (at the loop's offset), two device nodes of one
block device (same st_rdev), a partition and its whole disk (at the partition's start). Block devices are
followed through sysfs (`/sys/dev/block/MAJ:MIN`): a partition to its parent disk, a loop device to its
backing file. Device-mapper and other stacked devices are not followed (they count as themselves).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

SECTOR = 512
MAX_DEPTH = 8  # loop on a partition of a loop on ...: give up following after this many steps

Identity = tuple[str, int, int]  # ("file", st_dev, st_ino) or ("blk", major, minor)


def storage_of(fd: int, sysfs: Path = Path("/sys")) -> tuple[Identity, int]:
    """The storage an open file or block device reaches and where its byte 0 lies in that storage."""
    return _resolve(os.fstat(fd), 0, sysfs, 0)


def _resolve(st: os.stat_result, origin: int, sysfs: Path, depth: int) -> tuple[Identity, int]:
    if not stat.S_ISBLK(st.st_mode):
        return ("file", st.st_dev, st.st_ino), origin
    return _resolve_block(os.major(st.st_rdev), os.minor(st.st_rdev), origin, sysfs, depth)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _resolve_block(major: int, minor: int, origin: int, sysfs: Path, depth: int) -> tuple[Identity, int]:
    itself: tuple[Identity, int] = (("blk", major, minor), origin)
    if depth >= MAX_DEPTH:
        return itself
    try:
        node = (sysfs / "dev" / "block" / f"{major}:{minor}").resolve(strict=True)
    except OSError:
        return itself
    if (node / "partition").exists():
        start, parent = _read(node / "start"), _read(node.parent / "dev")
        if start is None or parent is None or not start.isdigit():
            return itself
        pmajor, _, pminor = parent.partition(":")
        if not (pmajor.isdigit() and pminor.isdigit()):
            return itself
        return _resolve_block(int(pmajor), int(pminor), origin + int(start) * SECTOR, sysfs, depth + 1)
    backing = _read(node / "loop" / "backing_file")
    offset = _read(node / "loop" / "offset")
    if backing is None or offset is None or not offset.isdigit() or backing.endswith("(deleted)"):
        return itself
    try:
        bst = os.stat(backing)
    except OSError:
        return itself
    return _resolve(bst, origin + int(offset), sysfs, depth + 1)
