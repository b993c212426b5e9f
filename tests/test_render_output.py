"""`netbootgen render`'s guarantees: nothing written on a bad inventory, atomic writes, deterministic output,
unchanged files left alone, --prune, and a manifest that matches the files."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from netbootgen import output
from netbootgen.errors import NetbootgenError
from netbootgen.output import MANIFEST, write_file, write_tree
from netbootgen.render import RenderedFile

Snapshot = Callable[[Path], dict[str, tuple[bytes, int, int]]]
OLD = 946684800  # 2000-01-01: an mtime no render can produce

NODE2 = """
[machines.node2]
macs = ["52:54:00:12:34:57"]
export = "root-node2"
"""
NODE2_PXE = "tftp/pxelinux.cfg/01-52-54-00-12-34-57"
NODE2_GRUB = "tftp/grub/grub.cfg-01-52-54-00-12-34-57"  # the same entries for UEFI clients
NODE1_PXE = "tftp/pxelinux.cfg/01-52-54-00-12-34-56"


@pytest.fixture
def rendered(make_inventory: Callable[..., Path], cli: Callable[..., Result], tmp_path: Path) -> Path:
    """The base inventory rendered into tmp_path/out."""
    out = tmp_path / "out"
    cli("render", make_inventory(), "--out", out, expect=0)
    return out


def age(top: Path) -> None:
    """Set every file's mtime to 2000-01-01, so that any rewrite shows."""
    for path in top.rglob("*"):
        if path.is_file():
            os.utime(path, (OLD, OLD))


def manifest(out: Path) -> dict[str, dict[str, str]]:
    return json.loads((out / MANIFEST).read_text())["files"]  # type: ignore[no-any-return]


def test_render_writes_the_expected_files(rendered: Path) -> None:
    files = {p.relative_to(rendered).as_posix() for p in rendered.rglob("*") if p.is_file()}
    assert {NODE1_PXE, NODE2_PXE, "tftp/pxelinux.cfg/default", "kernel/virtio.config",
            "dracut/95aoe/module-setup.sh", MANIFEST} <= files
    assert any(f.startswith("export/") and "root-node1" in f for f in files)
    assert os.access(rendered / "dracut/95aoe/module-setup.sh", os.X_OK)
    assert (rendered / NODE1_PXE).stat().st_mode & 0o777 == 0o644


def test_manifest_lists_every_file_with_its_sha256(rendered: Path) -> None:
    entries = manifest(rendered)
    on_disk = {p.relative_to(rendered).as_posix() for p in rendered.rglob("*") if p.is_file()} - {MANIFEST}
    assert set(entries) == on_disk
    for rel, entry in entries.items():
        data = (rendered / rel).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest(), rel
        assert int(entry["mode"], 8) == (rendered / rel).stat().st_mode & 0o7777, rel


@pytest.mark.parametrize("exists", [True, False], ids=["existing-out", "new-out"])
def test_nothing_changes_when_validation_fails(
    make_inventory: Callable[..., Path], cli: Callable[..., Result], snapshot: Snapshot, tmp_path: Path,
    exists: bool,
) -> None:
    out = tmp_path / "out"
    if exists:
        cli("render", make_inventory(), "--out", out, expect=0)
        age(out)
    before = snapshot(out)
    # node2 dropped (its files would be stale or pruned) and node1 broken: the render must stop first.
    bad = make_inventory((NODE2, ""), ('serial_console = "ttyS0,115200"', 'serial_console = "ttyS0,115200"\nmtu = 1'))
    res = cli("render", bad, "--out", out, "--prune")
    assert res.exit_code == 2, res.output
    assert "machines.node1.mtu" in res.output
    assert snapshot(out) == before
    assert out.exists() == exists


def test_same_inventory_gives_byte_identical_output(
    make_inventory: Callable[..., Path], snapshot: Snapshot, tmp_path: Path
) -> None:
    """Two renders in separate processes with different hash seeds (set/dict order must not leak out)."""
    inventory = make_inventory()
    trees = []
    for seed in ("1", "2"):
        out = tmp_path / f"out{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-m", "netbootgen", "render", os.fspath(inventory), "--out", os.fspath(out)],
                       check=True, env=env, capture_output=True)
        trees.append({rel: (data, mode) for rel, (data, mode, _) in snapshot(out).items()})
    assert trees[0] == trees[1]


def test_unchanged_files_are_not_rewritten(
    rendered: Path, make_inventory: Callable[..., Path], cli: Callable[..., Result], snapshot: Snapshot
) -> None:
    age(rendered)
    before = snapshot(rendered)
    res = cli("render", make_inventory(), "--out", rendered, expect=0)
    assert f"0 written, {len(before) - 1} unchanged, 0 removed" in res.output
    assert snapshot(rendered) == before  # content, mode and mtime


def test_only_changed_files_are_rewritten(
    rendered: Path, make_inventory: Callable[..., Path], cli: Callable[..., Result], snapshot: Snapshot
) -> None:
    age(rendered)
    before = snapshot(rendered)
    changed = make_inventory(('export = "root-node2"', 'export = "root-node2"\nkernel_args = ["quiet"]'))
    res = cli("render", changed, "--out", rendered, expect=0)
    after = snapshot(rendered)
    rewritten = {rel for rel in after if after[rel][2] != OLD * 10**9}
    assert rewritten == {NODE2_PXE, NODE2_GRUB, MANIFEST}, res.output
    assert b"quiet" in after[NODE2_PXE][0] and b"quiet" in after[NODE2_GRUB][0]
    assert {rel: v for rel, v in after.items() if rel not in rewritten} == {
        rel: v for rel, v in before.items() if rel not in rewritten
    }


def test_edited_or_rechmodded_files_are_restored(
    rendered: Path, make_inventory: Callable[..., Path], cli: Callable[..., Result], snapshot: Snapshot
) -> None:
    expected = snapshot(rendered)
    pxe = rendered / NODE1_PXE
    data = pxe.read_bytes()
    pxe.write_bytes(data.replace(b"rw", b"ro"))  # same size, different content
    script = rendered / "dracut/95aoe/module-setup.sh"
    script.chmod(0o644)
    cli("render", make_inventory(), "--out", rendered, expect=0)
    restored = snapshot(rendered)
    assert {rel: (d, m) for rel, (d, m, _) in restored.items()} == {rel: (d, m) for rel, (d, m, _) in expected.items()}


def test_stale_files_are_kept_and_reported_without_prune(
    rendered: Path, make_inventory: Callable[..., Path], cli: Callable[..., Result]
) -> None:
    exports = {rel for rel in manifest(rendered) if rel.startswith("export/") and "node2" in rel}
    stale = sorted({NODE2_PXE, NODE2_GRUB} | exports)
    assert len(stale) == 3
    res = cli("render", make_inventory((NODE2, "")), "--out", rendered, expect=0)
    for rel in stale:
        assert (rendered / rel).exists()
        assert f"stale (not needed any more; --prune removes it): {rel}" in res.output
        assert rel in manifest(rendered)  # still listed: a later --prune finds them
    res = cli("render", make_inventory((NODE2, "")), "--out", rendered, "--prune", expect=0)
    assert "3 removed" in res.output
    for rel in stale:
        assert not (rendered / rel).exists()
        assert rel not in manifest(rendered)
    assert (rendered / NODE1_PXE).exists()


def test_prune_removes_emptied_folders_only_inside_out(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_tree(out, {"a/b/one": RenderedFile("1\n"), "keep": RenderedFile("k\n")})
    report = write_tree(out, {"keep": RenderedFile("k\n")}, prune=True)
    assert report.removed == ["a/b/one"]
    assert not (out / "a").exists()
    assert (out / "keep").exists()


def test_prune_ignores_unsafe_manifest_entries(tmp_path: Path) -> None:
    out = tmp_path / "out"
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    write_tree(out, {"keep": RenderedFile("k\n")})
    doctored = {"files": {"keep": {"sha256": "x", "mode": "0644"}, "../victim": {"sha256": "x", "mode": "0644"},
                          os.fspath(victim): {"sha256": "x", "mode": "0644"}}}
    (out / MANIFEST).write_text(json.dumps(doctored))
    report = write_tree(out, {"keep": RenderedFile("k\n")}, prune=True)
    assert report.removed == []
    assert victim.read_text() == "precious\n"
    assert set(manifest(out)) == {"keep"}


def test_a_corrupt_manifest_is_replaced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_text("{not json")
    report = write_tree(out, {"x": RenderedFile("x\n")})
    assert report.written == ["x"]
    assert manifest(out) == {"x": {"sha256": hashlib.sha256(b"x\n").hexdigest(), "mode": "0644"}}


def test_writes_go_through_a_temporary_file_and_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        assert Path(src).parent == Path(dst).parent and Path(src).name.startswith(".")
        assert Path(src).read_bytes() == b"new\n" or Path(dst).name == MANIFEST  # complete before the rename
        renames.append((src, dst))
        real_replace(src, dst)

    monkeypatch.setattr(output.os, "replace", spy)
    write_tree(out, {"d/f": RenderedFile("new\n")})
    assert [Path(dst).name for _, dst in renames] == ["f", MANIFEST]  # the manifest last


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    write_tree(out, {"d/f": RenderedFile("old\n")})

    def broken(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device", dst)

    monkeypatch.setattr(output.os, "replace", broken)
    with pytest.raises(NetbootgenError, match="No space left on device"):
        write_tree(out, {"d/f": RenderedFile("new\n")})
    assert (out / "d/f").read_text() == "old\n"
    assert sorted(p.name for p in (out / "d").iterdir()) == ["f"]


def test_write_file_leaves_an_existing_folder_mode_alone(tmp_path: Path) -> None:
    folder = tmp_path / "private"
    folder.mkdir(mode=0o700)
    folder.chmod(0o700)
    write_file(folder / "x.json", b"{}\n", 0o600)
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (folder / "x.json").stat().st_mode & 0o777 == 0o600
    write_file(tmp_path / "new/sub/y", b"y", 0o644)
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "new/sub").stat().st_mode & 0o777 == 0o755


def test_write_tree_rejects_unsafe_paths(tmp_path: Path) -> None:
    with pytest.raises(NetbootgenError, match="unsafe output path"):
        write_tree(tmp_path / "out", {"../escape": RenderedFile("x")})
    assert not (tmp_path / "escape").exists()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_modes_do_not_depend_on_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        write_tree(tmp_path / "out", {"bin/run": RenderedFile("#!/bin/sh\n", 0o755), "etc/cfg": RenderedFile("x\n")})
    finally:
        os.umask(old)
    modes = {p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777 for p in tmp_path.rglob("*")}
    assert modes == {"out": 0o755, "out/bin": 0o755, "out/etc": 0o755, "out/bin/run": 0o755, "out/etc/cfg": 0o644,
                     f"out/{MANIFEST}": 0o644}
