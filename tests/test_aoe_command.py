"""`serve` command: bad input is rejected with exit status 2 before anything is served."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from netbootgen.aoe import backing as backing_mod
from netbootgen.aoe.command import (
    ServedExport,
    open_served,
    parse_export_options,
    serve_command,
    split_allow,
)
from netbootgen.aoe.paths import default_mac
from netbootgen.aoe.store import ExportSpec
from netbootgen.run import run as subprocess_run


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(100 * 512))
    return path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(serve_command, list(args))
    return result.exit_code, result.output


def test_command_name_and_group_registration(disk: Path, sockdir: Path) -> None:
    assert serve_command.name == "serve"

    @click.group()
    def main() -> None:
        pass

    main.add_command(serve_command)
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0
    for option in (
        "--export",
        "--transport",
        "--mac-allow",
        "--sync",
        "--direct",
        "--mtu",
        "--mac",
        "--bufcnt",
        "--ready-file",
    ):
        assert option in result.output
    result = CliRunner().invoke(main, ["serve", "--export", "x", "--transport", f"unix-stream:{sockdir}/s"])
    assert result.exit_code == 2


def test_missing_export(sockdir: Path) -> None:
    code, out = run("--transport", f"unix-stream:{sockdir}/s")
    assert code == 2 and "Missing option '--export'" in out


def test_missing_transport(disk: Path) -> None:
    code, out = run("--export", f"1.2={disk}")
    assert code == 2 and "Missing option '--transport'" in out


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("1.2", "expected SHELF.SLOT=PATH"),
        ("x.2={disk}", "'x.2' is not a valid SHELF.SLOT address"),
        ("1.2={disk},bogus", "unknown export option 'bogus'"),
        ("1.2={disk},offset=100", "offset 100 is beyond the end"),
        ("1.2={disk},offset=50,length=51", "exceeds the size"),
        ("1.2={missing}", "cannot open"),
    ],
)
def test_bad_export(disk: Path, sockdir: Path, spec: str, message: str) -> None:
    value = spec.format(disk=disk, missing=disk.with_name("missing.img"))
    code, out = run("--export", value, "--transport", f"unix-stream:{sockdir}/s")
    assert code == 2, out
    assert "Invalid value for '--export'" in out and message in out
    assert not (sockdir / "s").exists()


def test_missing_file_message_names_value(disk: Path, sockdir: Path) -> None:
    missing = disk.with_name("missing.img")
    code, out = run("--export", f"1.2={missing}", "--transport", f"unix-stream:{sockdir}/s")
    assert code == 2
    assert f"'1.2={missing}'" in out and "No such file or directory" in out


def test_duplicate_address(disk: Path, tmp_path: Path, sockdir: Path) -> None:
    other = tmp_path / "other.img"
    other.write_bytes(bytes(512))
    code, out = run(
        "--export", f"1.2={disk}", "--export", f"e1.2={other}", "--transport", f"unix-stream:{sockdir}/s"
    )
    assert code == 2
    assert f"'e1.2={other}': e1.2 is already exported by '1.2={disk}'" in out


def test_overlapping_windows(disk: Path, sockdir: Path) -> None:
    code, out = run(
        "--export",
        f"1.1={disk},length=50",
        "--export",
        f"1.2={disk},offset=49,ro",
        "--transport",
        f"unix-stream:{sockdir}/s",
    )
    assert code == 2
    assert f"'1.2={disk},offset=49,ro': window overlaps '1.1={disk},length=50'" in out


def open_exports(specs: list, values: list[str]) -> list:
    """Open --export windows as `serve` does; a bad one raises click.BadParameter naming its value."""
    items = [ServedExport(s, v) for s, v in zip(specs, values, strict=True)]
    return open_served(items, lambda label, message: click.BadParameter(f"{label!r}: {message}"))


def test_open_exports_overlap_rules(disk: Path) -> None:
    values = [f"1.1={disk},ro", f"1.2={disk},ro", f"1.3={disk},offset=50"]
    specs = parse_export_options(values[:2])
    exports = open_exports(specs, values[:2])  # read-only windows may overlap
    for exp in exports:
        exp.close()
    specs = parse_export_options([values[0], f"1.3={disk},offset=10,length=10"])
    with pytest.raises(click.BadParameter, match="window overlaps"):
        open_exports(specs, [values[0], "v"])
    disjoint = [f"1.1={disk},length=50", f"1.2={disk},offset=50"]
    exports = open_exports(parse_export_options(disjoint), disjoint)
    assert [e.sectors for e in exports] == [50, 50]
    for exp in exports:
        exp.close()


@pytest.mark.parametrize(
    ("args", "option", "message"),
    [
        (["--transport", "tcp:1.2.3.4:5"], "--transport", "unknown transport 'tcp'"),
        (["--transport", "unix-dgram:/x"], "--transport", "expected unix-dgram:BIND_PATH:PEER_PATH"),
        (["--transport", "unix-stream:/nonexistent-dir/s.sock"], "--transport", "No such file or directory"),
        (["--mac-allow", "00:11:22"], "--mac-allow", "not a valid MAC"),
        (["--mac", "zz"], "--mac", "not a valid MAC"),
        (["--mac", "01:00:5e:00:00:01"], "--mac", "is a multicast address"),
        (["--bufcnt", "1"], "--bufcnt", "1 is not in the range 2<=x<=65535"),
        (["--mtu", "500"], "--mtu", "500 is not in the range"),
    ],
)
def test_bad_options(disk: Path, sockdir: Path, args: list[str], option: str, message: str) -> None:
    if "--transport" not in args:
        args = [*args, "--transport", f"unix-stream:{sockdir}/s"]
    code, out = run("--export", f"1.2={disk}", *args)
    assert code == 2, out
    assert f"Invalid value for '{option}'" in out and message in out
    assert os.listdir(sockdir) == []


def test_mac_with_iface_rejected(disk: Path) -> None:
    code, out = run("--export", f"1.2={disk}", "--transport", "iface:eth0", "--mac", "02:00:00:00:00:01")
    assert code == 2 and "Invalid value for '--mac'" in out and "cannot be used with an iface" in out


def test_transport_not_a_socket(disk: Path, sockdir: Path) -> None:
    (sockdir / "s").write_text("keep me")
    code, out = run("--export", f"1.2={disk}", "--transport", f"unix-stream:{sockdir}/s")
    assert code == 2 and "not a socket" in out
    assert (sockdir / "s").read_text() == "keep me"


@pytest.mark.parametrize(
    ("shelf", "slot", "mac"), [(1, 2, "020000000102"), (0, 0, "020000000000"), (65534, 254, "020000fffefe")]
)
def test_default_mac(shelf: int, slot: int, mac: str) -> None:
    assert default_mac(ExportSpec(shelf, slot, Path("x"))).hex() == mac


# -- the same bytes under another name, files that are not storage, ASCII digits, a live bind path -------------


def nowhere(sockdir: Path) -> str:
    """A transport that cannot be bound: a command that wrongly accepted its exports fails, never serves."""
    return f"unix-stream:{sockdir}/missing/s.sock"


def _losetup(*args: str) -> str:
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        pytest.skip("needs root and losetup (Debian package mount)")
    res = subprocess_run(["losetup", *args], check=False, capture=True)
    if res.returncode != 0:
        pytest.skip(f"losetup {' '.join(args)}: {res.stderr.strip()}")
    return res.stdout.strip()


@pytest.fixture
def loop(disk: Path) -> Iterator[str]:
    """A loop device backed by `disk` from its sector 40 on."""
    dev = _losetup("--find", "--show", "--offset", str(40 * 512), os.fspath(disk))
    try:
        yield dev
    finally:
        subprocess_run(["losetup", "--detach", dev], check=False)


def test_file_and_its_loop_device_overlap(disk: Path, loop: str, tmp_path: Path, sockdir: Path) -> None:
    # Loop sector 0 is file sector 40: the file's sectors 30-49 and the loop's 0-9 are the same bytes.
    code, out = run("--export", f"1.1={disk},offset=30,length=20", "--export", f"1.2={loop},length=10",
                    "--transport", nowhere(sockdir))  # fmt: skip
    assert code == 2, out
    assert f"'1.2={loop},length=10': window overlaps '1.1={disk},offset=30,length=20'" in out
    # Side by side: file sectors 0-39 and the loop (file sectors 40-99) share nothing.
    values = [f"1.1={disk},length=40", f"1.2={loop}"]
    exports = open_exports(parse_export_options(values), values)
    assert [e.sectors for e in exports] == [40, 60]
    for exp in exports:
        exp.close()
    # A second device node of the same block device is the same device.
    st = os.stat(loop)
    node = tmp_path / "again"
    os.mknod(node, 0o600 | stat.S_IFBLK, st.st_rdev)
    values = [f"1.1={node},length=10", f"1.2={loop},offset=5,length=10"]
    with pytest.raises(click.BadParameter, match="window overlaps"):
        open_exports(parse_export_options(values), values)


def test_partition_followed_to_its_disk_through_sysfs(tmp_path: Path) -> None:
    # No partitioned device here to test with (loop devices are not scanned on every kernel): a sysfs tree
    # shaped like the kernel's. Partition 8:1 starts at sector 2048 of disk 8:0, loop 7:0 is backed by a file.
    sysfs = tmp_path / "sys"
    disk_dir = sysfs / "devices" / "virtual" / "block" / "sda"
    (disk_dir / "sda1").mkdir(parents=True)
    (disk_dir / "dev").write_text("8:0\n")
    (disk_dir / "sda1" / "partition").write_text("1\n")
    (disk_dir / "sda1" / "start").write_text("2048\n")
    (disk_dir / "sda1" / "dev").write_text("8:1\n")
    backing = tmp_path / "backing.img"
    backing.write_bytes(bytes(512))
    loop_dir = sysfs / "devices" / "virtual" / "block" / "loop0"
    (loop_dir / "loop").mkdir(parents=True)
    (loop_dir / "loop" / "backing_file").write_text(f"{backing}\n")
    (loop_dir / "loop" / "offset").write_text("4096\n")
    links = sysfs / "dev" / "block"
    links.mkdir(parents=True)
    for name, target in (("8:0", disk_dir), ("8:1", disk_dir / "sda1"), ("7:0", loop_dir)):
        (links / name).symlink_to(target)
    st = backing.stat()
    assert backing_mod._resolve_block(8, 1, 0, sysfs, 0) == (("blk", 8, 0), 2048 * 512)
    assert backing_mod._resolve_block(8, 0, 0, sysfs, 0) == (("blk", 8, 0), 0)
    assert backing_mod._resolve_block(7, 0, 512, sysfs, 0) == (("file", st.st_dev, st.st_ino), 4608)
    assert backing_mod._resolve_block(9, 9, 0, sysfs, 0) == (("blk", 9, 9), 0)  # unknown to sysfs: itself
    (loop_dir / "loop" / "backing_file").write_text(f"{backing} (deleted)\n")
    assert backing_mod._resolve_block(7, 0, 0, sysfs, 0) == (("blk", 7, 0), 0)


def test_fifo_refused_without_hanging(disk: Path, tmp_path: Path, sockdir: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for value in (f"1.2={fifo},ro", f"1.2={fifo}"):
        # In a child process: open() of a FIFO without a writer blocks; the timeout turns a hang into a failure.
        res = subprocess_run([sys.executable, "-m", "netbootgen.aoe", "--export", value, "--transport",
                              nowhere(sockdir)], check=False, timeout=20)  # fmt: skip
        assert res.returncode == 2, res.stderr
        assert f"Invalid value for '--export': '{value}'" in res.stderr and "is a FIFO" in res.stderr
    code, out = run("--export", f"1.2={tmp_path},ro", "--transport", nowhere(sockdir))
    assert code == 2 and "is a directory" in out


@pytest.mark.parametrize(
    "value", ["١.٢={disk}", "1.٢={disk}", "１.2={disk}", "1.2={disk},offset=١", "1.2={disk},length=٣"]
)
def test_non_ascii_digits_refused(disk: Path, sockdir: Path, value: str) -> None:
    code, out = run("--export", value.format(disk=disk), "--transport", nowhere(sockdir))
    assert code == 2, out
    assert "Invalid value for '--export'" in out


@pytest.mark.parametrize("kind", ["unix-dgram", "unix-stream"])
def test_live_bind_path_refused(disk: Path, sockdir: Path, kind: str) -> None:
    path = sockdir / "t.sock"
    live = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM if kind == "unix-dgram" else socket.SOCK_STREAM)
    live.bind(os.fspath(path))
    if kind == "unix-stream":
        live.listen()
    transport = f"unix-dgram:{path}:{sockdir}/q.sock" if kind == "unix-dgram" else f"unix-stream:{path}"
    try:
        # In a child process: one that took the path over would serve until the timeout.
        res = subprocess_run([sys.executable, "-m", "netbootgen.aoe", "--export", f"1.2={disk}", "--transport",
                              transport], check=False, timeout=20)  # fmt: skip
        assert res.returncode == 2, res.stderr
        assert f"Invalid value for '--transport': '{transport}'" in res.stderr and "in use" in res.stderr
        assert path.exists()
        # The first one still gets its frames.
        if kind == "unix-dgram":
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto(b"x", os.fspath(path))
            assert live.recv(10) == b"x"
    finally:
        live.close()


def test_split_allow() -> None:
    a, b = "52:54:00:00:03:01", "52-54-00-00-03-02"
    assert split_allow(f"1.0=/x.img,ro,allow={a}+{b},offset=8") == ("1.0=/x.img,ro,offset=8", (
        bytes.fromhex("525400000301"), bytes.fromhex("525400000302")))
    assert split_allow("1.0=/x.img,ro") == ("1.0=/x.img,ro", ())
    with pytest.raises(ValueError, match="'allow=zz': 'zz' is not a valid MAC"):
        split_allow("1.0=/x.img,allow=zz")
    with pytest.raises(ValueError, match="given twice"):
        split_allow(f"1.0=/x.img,allow={a},allow={b}")


@pytest.mark.parametrize(
    ("export", "extra", "message"),
    [
        ("1.2={disk},allow=52:54:00", [], "Invalid value for '--export': 'allow=52:54:00'"),
        ("1.2={disk},allow=52:54:00:00:00:01", ["--mac-allow", "52:54:00:00:00:02"],
         "--mac-allow cannot be combined with an export's allow="),
    ],
)
def test_bad_allow(disk: Path, sockdir: Path, export: str, extra: list[str], message: str) -> None:
    code, out = run("--export", export.format(disk=disk), "--transport", f"unix-stream:{sockdir}/s", *extra)
    assert code == 2 and message in out, out


def test_each_export_answers_its_own_allow_list(tmp_path: Path, sockdir: Path) -> None:
    """One target, two exports with their own allow= lists, two clients on one unix-stream socket (as a fleet
    boot runs it): each MAC sees its own export only, the shared read-only one both."""
    from netbootgen.aoe import protocol as p
    from netbootgen.aoe.process import ServeProcess
    from netbootgen.testing.client import AoeTimeout, Initiator, StreamChannel

    a, b = "52:54:00:00:00:0a", "52:54:00:00:00:0b"
    for name in ("a", "b", "shared"):
        (tmp_path / f"{name}.img").write_bytes(name.encode().ljust(512, b"\0") * 8)
    sock = sockdir / "t.sock"
    args = ["--export", f"0.1={tmp_path}/a.img,allow={a}", "--export", f"0.2={tmp_path}/b.img,allow={b}",
            "--export", f"1.0={tmp_path}/shared.img,ro,allow={a}+{b}", "--transport", f"unix-stream:{sock}"]
    with ServeProcess(args, tmp_path / "serve.log") as serve, StreamChannel(sock) as ca, StreamChannel(sock) as cb:
        for ch, mac, own, other in ((ca, a, 1, 2), (cb, b, 2, 1)):
            ini = Initiator(ch, mac=p.parse_mac(mac), shelf=0, slot=own, timeout=2.0)
            ini.query()
            assert ini.read(0, 1).rstrip(b"\0") == (b"a" if own == 1 else b"b")
            shared = Initiator(ch, mac=p.parse_mac(mac), shelf=1, slot=0, timeout=2.0)
            shared.query()
            assert shared.read(0, 1).rstrip(b"\0") == b"shared"
            with pytest.raises(AoeTimeout):
                Initiator(ch, mac=p.parse_mac(mac), shelf=0, slot=other, timeout=0.5).query()
        log = serve.output()
    assert f"allowed MACs {a})" in log and f"allowed MACs {b})" in log and f"allowed MACs {a}, {b})" in log
