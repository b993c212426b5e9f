"""emulate.derived: an initrd's archives uncompressed for a direct boot, made once and cached by the file's digest.

The initrds are made in the test as dracut lays them out (test_initrd_inspect.make_initrd: an uncompressed early
cpio, zero padding, then the main cpio compressed); the integration tests' direct boots hand such a file, made from
the real dracut initrd, to the kernel.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from netbootgen.emulate.derived import RAW_INITRD_KEEP, raw_initrd
from netbootgen.modules.cpio import NEWC_MAGICS, iter_entries, read_initramfs, uncompressed_initramfs
from tests.test_initrd_inspect import COMPRESSORS, make_initrd

pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in ("gcc", "cpio")), reason="gcc or cpio missing")


@pytest.mark.parametrize("compression", ["gzip", "xz", "zstd", "lz4"])
def test_same_archives_uncompressed(tmp_path: Path, compression: str) -> None:
    if shutil.which(COMPRESSORS[compression][0]) is None:
        pytest.skip(f"{COMPRESSORS[compression][0]} not found")
    data = make_initrd(tmp_path, compression).read_bytes()
    raw = uncompressed_initramfs(data)
    before, after = read_initramfs(data), read_initramfs(raw)
    assert [a.compression for a in before] == ["none", compression]
    assert [a.compression for a in after] == ["none", "none"]
    assert list(iter_entries(after)) == list(iter_entries(before))
    # the kernel takes a cpio header only at a 4-byte aligned offset
    assert all(a.offset % 4 == 0 and raw[a.offset:a.offset + 6] in NEWC_MAGICS for a in after)
    assert len(raw) % 4 == 0 and len(raw) > len(data)
    assert uncompressed_initramfs(raw) is raw  # nothing left to decompress


def test_raw_initrd_is_made_once_and_kept(tmp_path: Path) -> None:
    initrd = make_initrd(tmp_path, "zstd")
    cache = tmp_path / "cache"
    out = raw_initrd(initrd, cache)
    assert out.parent == cache / "initrd" / "raw" and out.name.startswith("initrd-") and out.suffix == ".cpio"
    assert out.read_bytes() == uncompressed_initramfs(initrd.read_bytes())
    os.utime(out, (1, 1))
    assert raw_initrd(initrd, cache) == out and out.stat().st_mtime > 1  # found again, and marked as used
    assert initrd.read_bytes().startswith(b"070701")  # the built file itself is left as it was


def test_nothing_to_decompress_or_unreadable_gives_the_file_itself(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    plain = tmp_path / "plain.img"
    plain.write_bytes(uncompressed_initramfs(make_initrd(tmp_path, "gzip").read_bytes()))
    garbage = tmp_path / "garbage.img"
    garbage.write_bytes(b"not an initramfs")
    for f in (plain, garbage):
        assert raw_initrd(f, cache) == f
        assert raw_initrd(f, cache) == f  # remembered (a .none file), not tried again
    assert sorted(p.suffix for p in (cache / "initrd" / "raw").iterdir()) == [".none", ".none"]


def test_the_most_recently_used_are_kept(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    made = []
    for i in range(RAW_INITRD_KEEP + 2):
        initrd = make_initrd(tmp_path / str(i), "gzip")
        initrd.write_bytes(initrd.read_bytes() + b"\0" * 4 * (i + 1))  # another digest each time
        made.append(raw_initrd(initrd, cache))
        os.utime(made[-1], (1000 + i, 1000 + i))
    left = sorted((cache / "initrd" / "raw").iterdir())
    assert left == sorted(made[-RAW_INITRD_KEEP:])
