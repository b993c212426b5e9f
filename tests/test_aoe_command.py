"""`serve` command: bad input is rejected with exit status 2 before anything is served."""

from __future__ import annotations

import os
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from netbootgen.aoe.command import ServedExport, default_mac, open_served, parse_export_options, serve_command
from netbootgen.aoe.store import ExportSpec


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
    assert code == 2 and "--mac cannot be used with an iface" in out


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
