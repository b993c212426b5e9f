"""dracut-ng from Debian's trixie source: the private apt configuration and the cached build."""

from __future__ import annotations

from pathlib import Path

import pytest

from netbootgen.errors import NetbootgenError
from netbootgen.modules import dracut_ng
from netbootgen.modules.dracut_ng import apt_options, debian_mirror, find_dracut, ng_root


def test_mirror_from_the_system_sources(tmp_path: Path) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "a.list").write_text("deb https://packages.cloud.google.com/apt cloud-sdk main\n")
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\n"
    )
    assert debian_mirror((tmp_path / "missing.list", d)) == "http://mirror.example/debian"
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://other.example/debian/ bookworm main\n")
    assert debian_mirror((tmp_path / "sources.list", d)) == "http://other.example/debian"
    assert debian_mirror((tmp_path / "missing.list",)) == dracut_ng.DEFAULT_MIRROR


def test_apt_reads_only_the_private_configuration(tmp_path: Path) -> None:
    opts = apt_options(tmp_path)
    values = dict(o.split("=", 1) for o in opts if o != "-o")
    assert values["Dir::Etc::SourceList"] == f"{tmp_path}/sources.list"
    assert values["Dir::Etc::SourceParts"] == "/dev/null"
    assert values["Dir::State::Lists"].startswith(str(tmp_path))
    assert values["Dir::Cache"].startswith(str(tmp_path))


def test_a_finished_build_is_reused(tmp_path: Path) -> None:
    """A tree marked .complete is used as it is: nothing is fetched or built (no apt, no network)."""
    root = ng_root(tmp_path)
    (root / "usr" / "lib" / "dracut").mkdir(parents=True)
    (root / ".complete").write_text("dracut_106.orig.tar.gz\n")
    d = find_dracut("ng", tmp_path)
    assert (d.name, d.binary, d.basedir) == ("ng", root / "usr/bin/dracut", root / "usr/lib/dracut")
    with pytest.raises(NetbootgenError, match="unknown dracut 'dracut-ng'"):
        find_dracut("dracut-ng", tmp_path)


def test_the_built_dracut_ng_runs() -> None:
    """`make test` builds dracut-ng into the cache first (make dracut-ng); here it must report its version."""
    from netbootgen.cache import cache_dir

    d = find_dracut("ng", cache_dir())
    assert d.version() == f"dracut {dracut_ng.NG_VERSION}"
    assert (d.basedir / "dracut-install").is_file() and (d.basedir / "modules.d" / "95rootfs-block").is_dir()
