"""`netbootgen serve INVENTORY --server NAME`: the server's exports, deny by default, over a real socket."""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from netbootgen.aoe import protocol as p
from netbootgen.aoe.command import inventory_plan, serve_command
from netbootgen.aoe.process import ServeProcess
from netbootgen.errors import InputError
from netbootgen.inventory import load_inventory
from netbootgen.testing.client import AoeTimeout, DgramChannel, Initiator

NODE1 = "52:54:00:12:34:56"
NODE2 = "52:54:00:00:00:02"
NODE3 = "52:54:00:00:00:03"  # a second NIC of node2


@pytest.fixture
def sockdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="aoe-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def write_inventory(tmp_path: Path) -> Path:
    """Server store1 exports e0.1 (node1), e0.2 (node2, a window at sector 8, bufcnt 8, ro) and e0.3 (no
    machine); store2 has only an export no machine uses."""
    for name in ("a.img", "b.img", "c.img", "d.img"):
        (tmp_path / name).write_bytes(bytes(range(256)) * 2 * 64)  # 64 sectors, each 0..255 twice
    inv = tmp_path / "inv.toml"
    inv.write_text(
        textwrap.dedent(
            f"""\
            [defaults]
            profile = "virtio"

            [profiles.virtio]
            kernel_version = "6.1.0-56-amd64"

            [servers.store1]
            interface = "aoebr0"
            mtu = 9000

            [servers.store2]
            interface = "aoebr1"

            [exports.root-node1]
            server = "store1"
            shelf = 0
            slot = 1
            path = "{tmp_path}/a.img"

            [exports.root-node2]
            server = "store1"
            shelf = 0
            slot = 2
            path = "{tmp_path}/b.img"
            readonly = true
            bufcnt = 8
            offset = 8
            length = 16

            [exports.spare]
            server = "store1"
            shelf = 0
            slot = 3
            path = "{tmp_path}/c.img"

            [exports.lonely]
            server = "store2"
            shelf = 1
            slot = 1
            path = "{tmp_path}/d.img"

            [machines.node1]
            macs = ["{NODE1}"]
            export = "root-node1"

            [machines.node2]
            macs = ["{NODE2}", "{NODE3.upper()}"]
            export = "root-node2"
            """
        )
    )
    return inv


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(serve_command, list(args))
    return result.exit_code, result.output


def test_plan_deny_by_default(tmp_path: Path) -> None:
    inv = load_inventory(write_inventory(tmp_path))
    plan = inventory_plan(inv, "store1")
    assert plan.skipped == ["spare"]
    by_name = {e.spec.name: e for e in plan.exports}
    assert sorted(by_name) == ["e0.1", "e0.2"]
    one, two = by_name["e0.1"], by_name["e0.2"]
    assert one.mac_allow == (p.parse_mac(NODE1),) and one.bufcnt == 64 and not one.spec.readonly
    assert set(two.mac_allow) == {p.parse_mac(NODE2), p.parse_mac(NODE3)}
    assert (two.bufcnt, two.spec.readonly, two.spec.offset, two.spec.length) == (8, True, 8, 16)
    assert two.label == "exports.root-node2"


def test_plan_errors(tmp_path: Path) -> None:
    inv = load_inventory(write_inventory(tmp_path))
    with pytest.raises(InputError, match=r"no server named 'store9' \(servers: 'store1', 'store2'\)"):
        inventory_plan(inv, "store9")
    with pytest.raises(InputError, match=r"server 'store2' has no export to serve \(no machine boots from lonely\)"):
        inventory_plan(inv, "store2")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--server", "store9"], "no server named 'store9'"),
        (["--server", "store2"], "server 'store2' has no export to serve"),
        ([], "Missing option '--server'"),
        (["--server", "store1", "--export", "1.2=/x"], "--export cannot be combined with an INVENTORY"),
        (["--server", "store1", "--mac-allow", NODE1], "--mac-allow cannot be combined with an INVENTORY"),
        (["--server", "store1", "--transport", "tcp:x"], "unknown transport 'tcp'"),
    ],
)
def test_inventory_mode_errors(tmp_path: Path, sockdir: Path, args: list[str], message: str) -> None:
    inv = write_inventory(tmp_path)
    if "--transport" not in args:
        args = [*args, "--transport", f"unix-stream:{sockdir}/s"]
    code, out = run(os.fspath(inv), *args)
    assert code == 2, out
    assert message in out
    assert os.listdir(sockdir) == []


def test_server_without_inventory(sockdir: Path) -> None:
    code, out = run("--server", "store1", "--transport", f"unix-stream:{sockdir}/s")
    assert code == 2 and "--server needs an INVENTORY" in out


def test_bad_inventory_and_missing_file(tmp_path: Path, sockdir: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[servers.s]\ninterface = 5\n")
    code, out = run(os.fspath(bad), "--server", "s", "--transport", f"unix-stream:{sockdir}/s")
    assert code == 2 and "error(s) in the inventory" in out
    inv = write_inventory(tmp_path)
    (tmp_path / "a.img").unlink()
    code, out = run(os.fspath(inv), "--server", "store1", "--transport", f"unix-stream:{sockdir}/s")
    assert code == 2, out
    assert f"exports.root-node1: cannot open {tmp_path}/a.img: No such file or directory" in out
    assert os.listdir(sockdir) == []


def test_default_transport_is_the_server_interface(tmp_path: Path) -> None:
    """Without --transport, the server's interface is used (aoebr0 does not exist here)."""
    code, out = run(os.fspath(write_inventory(tmp_path)), "--server", "store1")
    assert code == 2, out
    assert "Invalid value for '--transport': 'iface:aoebr0'" in out


def test_serve_inventory_over_unix_dgram(tmp_path: Path, sockdir: Path) -> None:
    inv = write_inventory(tmp_path)
    tsock, qsock = sockdir / "t.sock", sockdir / "q.sock"
    args = [os.fspath(inv), "--server", "store1", "--transport", f"unix-dgram:{tsock}:{qsock}"]
    with ServeProcess(args, tmp_path / "serve.log") as served:
        image_a = (tmp_path / "a.img").read_bytes()
        with DgramChannel(qsock, tsock) as ch:
            # node1 sees e0.1 only; the server's mtu 9000 gives 17 sectors per frame.
            ini = Initiator(ch, mac=p.parse_mac(NODE1), shelf=0, slot=1, timeout=2.0)
            cfg = ini.query()
            assert (cfg.bufcnt, cfg.scnt) == (64, 17)
            data = os.urandom(17 * 512)
            ini.write(5, data)
            assert ini.read(5, 17) == data
            assert (tmp_path / "a.img").read_bytes() == image_a[: 5 * 512] + data + image_a[22 * 512 :]
            with pytest.raises(AoeTimeout):  # not node1's export
                Initiator(ch, mac=p.parse_mac(NODE1), shelf=0, slot=2, timeout=1.0).query()
            # node2 (second NIC) sees the read-only window of e0.2, advertised with its bufcnt 8.
            ini2 = Initiator(ch, mac=p.parse_mac(NODE3), shelf=0, slot=2, timeout=2.0)
            assert ini2.query().bufcnt == 8
            assert p.identify_capacity(ini2.identify()) == 16
            assert ini2.read(0, 1) == (tmp_path / "b.img").read_bytes()[8 * 512 : 9 * 512]
            with pytest.raises(OSError, match="status 0x41"):
                ini2.write(0, bytes(512))
            # Nobody answers an unknown MAC, nor anyone for the unused export.
            for mac, slot in ((NODE2.replace("02", "99"), 1), ("02:00:00:00:00:99", 2), (NODE1, 3)):
                with pytest.raises(AoeTimeout):
                    Initiator(ch, mac=p.parse_mac(mac), shelf=0, slot=slot, timeout=0.5).query()
        status = served.stop()
    err = served.output()
    assert status == 0, err
    assert f"e0.1 -> {tmp_path}/a.img (64 sectors, rw, allowed MACs {NODE1}) on unix-dgram:" in err
    assert f"e0.2 -> {tmp_path}/b.img (16 sectors, sectors 8-23, ro, allowed MACs {NODE2}, {NODE3})" in err
    assert "exports.spare: not served, no machine boots from it" in err
    assert "MTU 9000 (17 sectors per frame), bufcnt 64, 8" in err
    assert "e0.1: frames=3 bytes_read=8704 bytes_written=8704 errors=0" in err
    assert "e0.2: frames=4 bytes_read=512 bytes_written=0 errors=1" in err
