"""Fixtures of the QEMU tests: the fetched Debian kernel, the QEMU binary, a work folder with short paths."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from netbootgen.cache import cache_dir
from netbootgen.emulate.qemu import QEMU
from netbootgen.kernel.fetch import KernelTree, fetch_kernel
from netbootgen.run import need_binary


@pytest.fixture(scope="module")
def kernel() -> KernelTree:
    return fetch_kernel("auto", cache_dir())


@pytest.fixture(scope="module")
def qemu() -> Path:
    return need_binary(QEMU)


@pytest.fixture
def work() -> Iterator[Path]:
    """Short paths for unix sockets (tmp_path may exceed their 107-byte limit)."""
    d = Path(tempfile.mkdtemp(prefix="nbq-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)
