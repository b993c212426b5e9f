"""An ext4 or xfs image from a directory tree, without mounting: `mke2fs -d` for ext4, a prototype file
(`mkfs.xfs -p`) for xfs. The image is a sparse file of the given size."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from netbootgen.errors import InputError
from netbootgen.run import need_binary, run

LABEL = "aoeroot"
XFS_MIN = 300 << 20  # mkfs.xfs refuses smaller file systems
SIZE_RE = re.compile(r"^([0-9]+)([KMGT]?)i?B?\Z", re.IGNORECASE)
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """'1G', '1536M', '2GiB' or a number of bytes -> bytes."""
    m = SIZE_RE.match(text.strip())
    if not m or int(m.group(1)) == 0:
        raise InputError(f"--size: {text!r} is not a size (e.g. 1G, 1536M)")
    return int(m.group(1)) * UNITS[m.group(2).upper()]


def check_size(fstype: str, size: int) -> None:
    """Refuse a size the file system cannot be made in (before anything is built)."""
    if fstype == "xfs" and size < XFS_MIN:
        raise InputError(f"--size: an xfs image needs at least 300M, not {size >> 20}M")
    if size < 64 << 20:
        raise InputError(f"--size: a root image needs at least 64M, not {size >> 20}M")


def make_fs_image(tree: Path, fstype: str, size: int, image: Path) -> None:
    """Write `tree` into a new sparse `size`-byte image of `fstype` at `image` (replaced if it exists)."""
    check_size(fstype, size)
    image.unlink(missing_ok=True)
    with image.open("wb") as f:
        f.truncate(size)
    if fstype == "ext4":
        run([need_binary("mke2fs"), "-q", "-F", "-t", "ext4", "-L", LABEL, "-d", tree, image])
    elif fstype == "xfs":
        proto = image.with_name(image.name + ".proto")
        sticky = write_xfs_proto(tree, proto)
        run([need_binary("mkfs.xfs"), "-q", "-f", "-L", LABEL, "-p", proto, image])
        proto.unlink()
        # the prototype format has no sticky bit: set it afterwards on the inodes (/tmp, /var/tmp)
        for rel, mode in sticky:
            run([need_binary("xfs_db"), "-x", "-c", f"path /{rel}", "-c", f"write core.mode 0{mode:o}", image])
    else:
        raise InputError(f"fstype {fstype!r}: images are made in ext4 or xfs")


def _proto_mode(st: os.stat_result) -> str:
    kind = {stat.S_IFREG: "-", stat.S_IFDIR: "d", stat.S_IFLNK: "l", stat.S_IFBLK: "b", stat.S_IFCHR: "c",
            stat.S_IFIFO: "p"}.get(stat.S_IFMT(st.st_mode))
    if kind is None:
        raise InputError(f"cannot put a {stat.filemode(st.st_mode)} file into an xfs prototype")
    suid = "u" if st.st_mode & stat.S_ISUID else "-"
    sgid = "g" if st.st_mode & stat.S_ISGID else "-"
    return f"{kind}{suid}{sgid}{st.st_mode & 0o777:03o} {st.st_uid} {st.st_gid}"


def write_xfs_proto(tree: Path, proto: Path) -> list[tuple[str, int]]:
    """Write mkfs.xfs's prototype file for `tree`; returns the (path, full mode) of sticky directories."""
    sticky: list[tuple[str, int]] = []
    lines = ["/netbootgen", "0 0", _proto_mode(tree.lstat())]

    def walk(d: Path, depth: int) -> None:
        for entry in sorted(d.iterdir(), key=lambda p: p.name):
            st = entry.lstat()
            if any(c.isspace() for c in entry.name):
                raise InputError(f"{entry}: a name with white space cannot go into an xfs prototype file")
            line = f"{' ' * depth}{entry.name} {_proto_mode(st)}"
            if stat.S_ISREG(st.st_mode):
                lines.append(f"{line} {entry}")
            elif stat.S_ISLNK(st.st_mode):
                lines.append(f"{line} {os.readlink(entry)}")
            elif stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode):
                lines.append(f"{line} {os.major(st.st_rdev)} {os.minor(st.st_rdev)}")
            elif stat.S_ISDIR(st.st_mode):
                lines.append(line)
                if st.st_mode & stat.S_ISVTX:
                    sticky.append((os.fspath(entry.relative_to(tree)), stat.S_IFDIR | stat.S_IMODE(st.st_mode)))
                walk(entry, depth + 1)
                lines.append(f"{' ' * depth}$")
            else:
                lines.append(line)

    walk(tree, 1)
    lines.append("$")
    proto.write_text("\n".join(lines) + "\n")
    return sticky
