"""The initrd cache keeps each profile's newest builds; the one subprocess helper logs every command."""

from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path

import pytest

from netbootgen.errors import CommandFailed
from netbootgen.kernel.fetch import KernelTree, resolve_version
from netbootgen.modules.initrd import InitrdSpec, cache_name, remove_stale
from netbootgen.run import run, spawn

KERNEL = KernelTree("6.1.0-57-amd64", Path("/nonexistent"))


def spec(profile: str, systemd: bool = True) -> InitrdSpec:
    return InitrdSpec(profile, KERNEL, {}, ("virtio_net",), systemd=systemd)


def cached(cache: Path, s: InitrdSpec, key: str, age: int) -> Path:
    path = cache / "initrd" / cache_name(s, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"initrd")
    os.utime(path, (1_700_000_000 - age, 1_700_000_000 - age))
    return path


def test_remove_stale_keeps_the_newest_of_the_same_profile_only(tmp_path: Path) -> None:
    web = [cached(tmp_path, spec("web"), f"{i:016x}", age=i) for i in range(5)]  # web[0] is the newest
    others = [
        cached(tmp_path, spec("web-big"), "a" * 16, age=100),  # a profile whose name starts like "web"
        cached(tmp_path, spec("db"), "b" * 16, age=100),
        cached(tmp_path, spec("web", systemd=False), "c" * 16, age=100),  # the shell-only flavour
    ]
    removed = remove_stale(spec("web"), tmp_path, keep=3)
    assert sorted(removed) == sorted(web[3:])
    assert all(p.exists() for p in web[:3] + others)
    assert not any(p.exists() for p in web[3:])
    assert remove_stale(spec("db"), tmp_path) == []


def test_run_logs_each_command_and_failures_name_it(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    with caplog.at_level(logging.INFO, logger="netbootgen.commands"):
        assert run(["echo", "a b"], capture=True).stdout == "a b\n"
        with open(tmp_path / "out", "wb") as out:
            assert spawn([sys.executable, "-c", "print('spawned')"], output=out).wait() == 0
    spawned = shlex.join([sys.executable, "-c", "print('spawned')"])
    assert [r.getMessage() for r in caplog.records] == ["echo 'a b'", spawned]
    assert (tmp_path / "out").read_text() == "spawned\n"
    with pytest.raises(CommandFailed, match=r"exit status 3: sh -c 'echo oops; exit 3'\noops"):
        run(["sh", "-c", "echo oops; exit 3"])
    with pytest.raises(CommandFailed, match=r"timed out after 1 s: sh -c .*\npartial"):
        run(["sh", "-c", "echo partial; sleep 5"], timeout=1)


def test_auto_kernel_version_is_kept_until_the_apt_lists_change(tmp_path: Path) -> None:
    """'auto' asks apt-cache once; then the cache answers (0.8 s less per build) until `apt-get update` changes
    the package lists."""
    real = resolve_version("auto")  # apt-cache's answer
    cache, lists = tmp_path / "cache", tmp_path / "lists"
    lists.mkdir()  # stands for APT_LISTS: what the key is made of (apt-cache reads the real lists)
    (lists / "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages").write_text("Package: a\n")
    assert resolve_version("auto", cache, lists) == real
    (saved,) = (cache / "kernels").glob("auto-*.version")
    saved.write_text("6.1.0-99-amd64\n")  # what the cache says is what is used: apt-cache is not asked
    assert resolve_version("auto", cache, lists) == "6.1.0-99-amd64"
    next(lists.glob("*_Packages*")).write_text("changed\n")  # an apt-get update
    assert resolve_version("auto", cache, lists) == real
    assert [p.name for p in (cache / "kernels").glob("auto-*.version")] != [saved.name]
