"""Shared fixtures: inline inventories written to tmp_path, the real CLI run through click's CliRunner, and the
95aoe script tests' sandbox (tests/dracut_sandbox.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from netbootgen.cli import main
from tests.dracut_sandbox import dracut_host_untouched, module_dir, sandbox  # noqa: F401 (the 95aoe tests' fixtures)

# A small valid inventory: two machines, each with its own writable export, one profile, one server.
# Tests derive broken variants from it with edit() so that each keeps exactly one mistake.
BASE_INVENTORY = textwrap.dedent(
    """\
    [defaults]
    profile = "virtio"

    [profiles.virtio]
    nic_drivers = { virtio_net = "m" }

    [servers.store1]
    interface = "eth0"
    mtu = 1500

    [exports.root-node1]
    server = "store1"
    shelf = 0
    slot = 1
    path = "/srv/aoe/node1.img"

    [exports.root-node2]
    server = "store1"
    shelf = 0
    slot = 2
    path = "/srv/aoe/node2.img"

    [machines.node1]
    macs = ["52:54:00:12:34:56"]
    export = "root-node1"
    serial_console = "ttyS0,115200"

    [machines.node2]
    macs = ["52:54:00:12:34:57"]
    export = "root-node2"
    """
)


def edit(text: str, *replacements: tuple[str, str]) -> str:
    """`text` with each (old, new) replaced once; old must occur, so that a stale test fails loudly."""
    for old, new in replacements:
        assert old in text, f"{old!r} is not in the inventory"
        text = text.replace(old, new, 1)
    return text


@pytest.fixture
def write_inventory(tmp_path: Path) -> Callable[..., Path]:
    """write_inventory(text, name="inventory.toml") -> the path in tmp_path now holding `text` (dedented)."""

    def write(text: str, name: str = "inventory.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def make_inventory(write_inventory: Callable[..., Path]) -> Callable[..., Path]:
    """make_inventory((old, new), ...) -> path of BASE_INVENTORY with those edits (see edit())."""

    def make(*replacements: tuple[str, str], name: str = "inventory.toml") -> Path:
        return write_inventory(edit(BASE_INVENTORY, *replacements), name)

    return make


@pytest.fixture
def cli() -> Callable[..., Result]:
    """cli("validate", path) -> click Result of running netbootgen's real command line in-process."""

    def run(*args: str | os.PathLike[str], expect: int | None = None) -> Result:
        res = CliRunner().invoke(main, [os.fspath(a) for a in args], catch_exceptions=True)
        if res.exception is not None and not isinstance(res.exception, SystemExit):
            raise res.exception  # a traceback, not a message: always a bug
        if expect is not None:
            assert res.exit_code == expect, res.output
        return res

    return run


def tree_snapshot(top: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under `top`: relative path -> (content, mode, mtime_ns); {} if `top` does not exist."""
    snap = {}
    for path in sorted(top.rglob("*")):
        if path.is_file():
            st = path.stat()
            snap[path.relative_to(top).as_posix()] = (path.read_bytes(), st.st_mode & 0o7777, st.st_mtime_ns)
    return snap


@pytest.fixture
def snapshot() -> Callable[[Path], dict[str, tuple[bytes, int, int]]]:
    return tree_snapshot



@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short directory for unix socket paths (tmp_path may exceed the 107-byte limit)."""
    d = Path(tempfile.mkdtemp(prefix="aoe-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)
