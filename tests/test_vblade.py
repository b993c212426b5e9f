"""vblade units: systemd escaping against the real systemd-escape, the rendered units against the real
systemd-analyze, and the rendered ExecStart run by the real vblade in a network namespace."""

from __future__ import annotations

import os
import re
import select
import shlex
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from netbootgen.export.systemd import device_unit, systemd_escape, unit_quote
from netbootgen.export.vblade import MAX_MACS, render_units, unit_name
from netbootgen.generate import render_inventory
from netbootgen.inventory import Inventory, load_inventory
from netbootgen.output import write_tree

FLEET = """\
    [defaults]
    profile = "virtio"

    [profiles.virtio]
    nic_drivers = { virtio_net = "m" }

    [servers.store1]
    interface = "br-lan"

    [servers.store2]
    interface = "eth0.100"

    [exports.root-node1]
    server = "store1"
    shelf = 0
    slot = 1
    path = "/srv/aoe/node1.img"

    [exports.root-node2]
    server = "store2"
    shelf = 1
    slot = 2
    path = "/dev/vg0/node2"
    sync = true
    direct = true
    offset = 2048
    length = 4096
    bufcnt = 32

    [exports.shared]
    server = "store1"
    shelf = 100
    slot = 0
    path = "/home/aoe/shared.img"
    readonly = true

    [exports.scratch]
    server = "store2"
    shelf = 7
    slot = 0
    path = "/var/tmp/aoe/node5.img"

    [exports.spare]
    server = "store1"
    shelf = 9
    slot = 9
    path = "/srv/aoe/spare.img"

    [machines.node1]
    macs = ["52:54:00:12:34:56"]
    export = "root-node1"

    [machines.node2]
    macs = ["52:54:00:00:00:12", "52-54-00-00-00-02"]
    export = "root-node2"

    [machines.node3]
    macs = ["52:54:00:00:00:03"]
    export = "shared"

    [machines.node4]
    macs = ["52:54:00:00:00:04"]
    export = "shared"

    [machines.node5]
    macs = ["52:54:00:00:00:05"]
    export = "scratch"
"""


def load(tmp_path: Path, text: str, name: str = "fleet.toml") -> Inventory:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return load_inventory(path)


@pytest.fixture
def fleet(tmp_path: Path) -> Inventory:
    return load(tmp_path, FLEET)


def settings(text: str) -> list[tuple[str, str]]:
    """The Key=value lines of a unit, in order."""
    return [tuple(line.split("=", 1)) for line in text.splitlines()  # type: ignore[misc]
            if "=" in line and not line.startswith("#")]


def values(text: str, key: str) -> list[str]:
    return [v for k, v in settings(text) if k == key]


def exec_argv(unit_text: str) -> list[str]:
    """ExecStart= split as systemd does for what unit_quote() writes (double quotes, '%%' and '$$')."""
    (line,) = values(unit_text, "ExecStart")
    return [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(line)]


# --- systemd escaping -------------------------------------------------------------------------------------

ESCAPE_CASES = ["eth0", "br-lan", "eth0.100", "en.p3s0", ".hidden", "a b", "ä€", "x\\y", "a:b_c", "-", "a/b",
                "%x", "wg-vpn@1", "", "tab\tnl\n", "ünïcode-name", "UPPER_lower.9"]
PATH_CASES = ["/", "//", "/sys/subsystem/net/devices/br-lan", "/a//b/", "/a/./b", "/.x/y", "/a/.b", "/-",
              "/a b/c-d", "/a/..b", "/srv/aoe/node1.img", "///a///", "/./.", "a/b", ".//a", ""]


def _systemd_escape(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-escape", *args], capture_output=True, text=True)


needs_systemd_escape = pytest.mark.skipif(shutil.which("systemd-escape") is None,
                                          reason="systemd-escape not found (Debian package systemd)")


@needs_systemd_escape
@pytest.mark.parametrize("value", ESCAPE_CASES)
def test_systemd_escape_matches_the_real_one(value: str) -> None:
    real = _systemd_escape("--", value)
    assert real.returncode == 0
    assert systemd_escape(value) == real.stdout.rstrip("\n")


@needs_systemd_escape
@pytest.mark.parametrize("value", PATH_CASES)
def test_systemd_escape_path_matches_the_real_one(value: str) -> None:
    real = _systemd_escape("--path", "--", value)
    assert real.returncode == 0, real.stderr
    assert systemd_escape(value, path=True) == real.stdout.rstrip("\n")


@needs_systemd_escape
@pytest.mark.parametrize("value", ["/a/../b", "/..", ".", "./", "a/.."])
def test_systemd_escape_path_refuses_what_the_real_one_refuses(value: str) -> None:
    assert _systemd_escape("--path", "--", value).returncode != 0
    with pytest.raises(ValueError):
        systemd_escape(value, path=True)


@needs_systemd_escape
@pytest.mark.parametrize("interface", ["eth0", "br-lan", "eth0.100", "enp3s0f1", "veth-a_b.7"])
def test_device_unit_is_systemds_name_for_the_interface(interface: str) -> None:
    real = _systemd_escape("--path", "--suffix=device", f"/sys/subsystem/net/devices/{interface}")
    assert device_unit(interface) == real.stdout.strip()


def test_device_unit_escapes_dashes() -> None:
    assert device_unit("br-lan") == "sys-subsystem-net-devices-br\\x2dlan.device"


@pytest.mark.parametrize(("value", "command", "expected"), [
    ("/srv/aoe/node1.img", True, "/srv/aoe/node1.img"),
    ("52:54:00:12:34:56,52:54:00:00:00:02", True, "52:54:00:12:34:56,52:54:00:00:00:02"),
    ("/srv/my disk.img", False, '"/srv/my disk.img"'),
    ("/srv/100%.img", False, "/srv/100%%.img"),
    ("/srv/$HOME", True, "/srv/$$HOME"),
    ("/srv/$HOME", False, "/srv/$HOME"),
    ("it's", False, "\"it's\""),
    ("", True, '""'),
])  # fmt: skip
def test_unit_quote(value: str, command: bool, expected: str) -> None:
    assert unit_quote(value, command=command) == expected


@pytest.mark.parametrize("value", ["a\nb", 'a"b', "a\\b", "a\x00b"])
def test_unit_quote_refuses_what_a_unit_file_cannot_hold(value: str) -> None:
    with pytest.raises(ValueError):
        unit_quote(value)


# --- the rendered units -----------------------------------------------------------------------------------

def test_one_unit_per_used_export_and_none_for_an_unused_one(fleet: Inventory) -> None:
    names = sorted(render_units(fleet))
    assert names == [f"export/netbootgen-aoe-{n}.service"
                     for n in ("root-node1", "root-node2", "scratch", "shared")]


def test_exec_start_of_a_plain_export(fleet: Inventory) -> None:
    unit = render_units(fleet)["export/netbootgen-aoe-root-node1.service"].text
    assert values(unit, "ExecStart") == [
        "/usr/sbin/vblade -b 64 -m 52:54:00:12:34:56 0 1 br-lan /srv/aoe/node1.img"]


def test_exec_start_carries_every_mac_and_option(fleet: Inventory) -> None:
    unit = render_units(fleet)["export/netbootgen-aoe-root-node2.service"].text
    # Both NICs of node2, normalized to the colon form vblade parses, sorted.
    assert exec_argv(unit) == [
        "/usr/sbin/vblade", "-b", "32", "-m", "52:54:00:00:00:02,52:54:00:00:00:12",
        "-s", "-d", "-o", "2048", "-l", "4096", "1", "2", "eth0.100", "/dev/vg0/node2",
    ]


def test_a_shared_read_only_export_allows_all_its_machines(fleet: Inventory) -> None:
    argv = exec_argv(render_units(fleet)["export/netbootgen-aoe-shared.service"].text)
    assert argv[argv.index("-m") + 1] == "52:54:00:00:00:03,52:54:00:00:00:04"
    assert "-r" in argv


def test_units_are_bound_to_the_escaped_interface_device(fleet: Inventory) -> None:
    unit = render_units(fleet)["export/netbootgen-aoe-root-node1.service"].text
    dev = "sys-subsystem-net-devices-br\\x2dlan.device"
    assert values(unit, "BindsTo") == [dev]
    assert values(unit, "After") == [dev]
    assert values(unit, "WantedBy") == [dev]
    unit2 = render_units(fleet)["export/netbootgen-aoe-root-node2.service"].text
    assert values(unit2, "BindsTo") == ["sys-subsystem-net-devices-eth0.100.device"]


def test_restart_and_sandbox(fleet: Inventory) -> None:
    for unit in (f.text for f in render_units(fleet).values()):
        assert values(unit, "Restart") == ["on-failure"]
        assert values(unit, "CapabilityBoundingSet") == ["CAP_NET_RAW"]
        assert values(unit, "RestrictAddressFamilies") == ["AF_PACKET"]
        assert values(unit, "ProtectSystem") == ["strict"]
        assert values(unit, "NoNewPrivileges") == ["yes"]
        keys = {k for k, _ in settings(unit)}
        # vblade needs the host's network with CAP_NET_RAW: no network or user namespace.
        assert not keys & {"PrivateNetwork", "PrivateUsers", "User", "DynamicUser", "AmbientCapabilities"}


def test_file_export_gets_its_path_and_no_devices(fleet: Inventory) -> None:
    unit = render_units(fleet)["export/netbootgen-aoe-root-node1.service"].text
    assert values(unit, "ReadWritePaths") == ["/srv/aoe/node1.img"]
    assert values(unit, "PrivateDevices") == ["yes"]
    assert values(unit, "DeviceAllow") == []
    assert values(unit, "ProtectHome") == ["yes"]
    assert values(unit, "PrivateTmp") == ["yes"]


def test_block_device_export_gets_just_its_device(fleet: Inventory) -> None:
    unit = render_units(fleet)["export/netbootgen-aoe-root-node2.service"].text
    assert values(unit, "DevicePolicy") == ["closed"]
    assert values(unit, "DeviceAllow") == ["/dev/vg0/node2 rw"]
    assert values(unit, "PrivateDevices") == []


def test_read_only_export_under_home_and_export_under_var_tmp(fleet: Inventory) -> None:
    shared = render_units(fleet)["export/netbootgen-aoe-shared.service"].text
    assert values(shared, "ReadOnlyPaths") == ["/home/aoe/shared.img"]
    assert values(shared, "ReadWritePaths") == []
    assert values(shared, "ProtectHome") == ["read-only"]  # "yes" would hide /home from vblade
    scratch = render_units(fleet)["export/netbootgen-aoe-scratch.service"].text
    assert values(scratch, "PrivateTmp") == ["no"]  # "yes" would hide /var/tmp/aoe/node5.img


def many_macs(tmp_path: Path) -> Inventory:
    """70 machines sharing one read-only export: more MACs than one vblade holds."""
    machines = "".join(f'[machines.n{i}]\nmacs = ["52:54:00:00:01:{i:02x}"]\nexport = "ro"\n'
                       for i in range(70))
    return load(tmp_path, textwrap.dedent("""\
        [profiles.p]
        [servers.s]
        interface = "eth0"
        [exports.ro]
        server = "s"
        shelf = 5
        slot = 1
        path = "/srv/ro.img"
        readonly = true
        [defaults]
        profile = "p"
        """) + machines)


def test_more_macs_than_vblade_holds_are_split_over_processes(tmp_path: Path) -> None:
    inv = many_macs(tmp_path)
    units = render_units(inv)
    assert sorted(units) == ["export/netbootgen-aoe-ro.service", "export/netbootgen-aoe2-ro.service",
                             "export/netbootgen-aoe3-ro.service"]
    lists = [exec_argv(u.text)[exec_argv(u.text).index("-m") + 1].split(",") for u in units.values()]
    assert [len(macs) for macs in lists] == [MAX_MACS, MAX_MACS, 70 - 2 * MAX_MACS]
    assert sorted(mac for macs in lists for mac in macs) == sorted(m.macs[0] for m in inv.machines.values())
    assert all(exec_argv(u.text)[-4:] == ["5", "1", "eth0", "/srv/ro.img"] for u in units.values())
    assert "MACs 33-64 of 70" in units["export/netbootgen-aoe2-ro.service"].text


def test_units_are_deterministic(fleet: Inventory, tmp_path: Path) -> None:
    again = load(tmp_path, FLEET, "again.toml")
    assert {k: v.text.replace("again.toml", "fleet.toml") for k, v in render_units(again).items()} == \
        {k: v.text for k, v in render_units(fleet).items()}


def test_unit_name() -> None:
    inv = load_inventory(None)
    ex = inv.exports["root-node1"]
    assert unit_name(ex) == "netbootgen-aoe-root-node1.service"
    assert unit_name(ex, 2) == "netbootgen-aoe2-root-node1.service"


# --- systemd-analyze --------------------------------------------------------------------------------------

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze not found (Debian package systemd)")
needs_vblade = pytest.mark.skipif(not os.access("/usr/sbin/vblade", os.X_OK),
                                  reason="/usr/sbin/vblade not found (Debian package vblade)")


def written_units(inv: Inventory, out: Path) -> list[Path]:
    write_tree(out, render_inventory(inv))
    units = sorted((out / "export").glob("*.service"))
    assert units
    return units


DATA_FLEET = Path(__file__).parent / "data" / "fleet.toml"


@needs_analyze
@needs_vblade  # verify checks that ExecStart's program exists
@pytest.mark.parametrize("which", ["example", "fleet", "data-fleet", "many-macs"])
def test_units_pass_systemd_analyze_verify(which: str, fleet: Inventory, tmp_path: Path) -> None:
    if which == "data-fleet" and not DATA_FLEET.exists():
        pytest.skip(f"{DATA_FLEET} not found")
    if which == "many-macs":  # the split units (their old names, NAME:2, failed: verify reads FILE:ALIAS)
        inv = many_macs(tmp_path)
    else:
        inv = fleet if which == "fleet" else load_inventory(DATA_FLEET if which == "data-fleet" else None)
    units = written_units(inv, tmp_path / "out")
    # --man=no: whether man-db is installed is not the unit's business. Warnings about the unit files
    # ("file:line: Unknown key ...", "Failed to parse ...") are printed but do not change the exit status, so
    # any line naming one of our files fails the test too.
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", *map(os.fspath, units)],
                         capture_output=True, text=True, env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"})
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    ours = [line for line in out.splitlines() if any(u.name in line for u in units)]
    assert ours == [], out


@needs_analyze
def test_verify_would_catch_a_bad_unit(tmp_path: Path) -> None:
    """The check above is not vacuous: a typo in a unit is reported on a line naming the file."""
    bad = tmp_path / "bad.service"
    bad.write_text("[Service]\nExecStart=/bin/true\nProtectSystem=stricter\n")
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", os.fspath(bad)], capture_output=True,
                         text=True, env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"})
    assert "bad.service:3" in res.stdout + res.stderr


@needs_analyze
def test_units_sandbox_rating(fleet: Inventory, tmp_path: Path) -> None:
    """systemd's own exposure rating: 'OK' (at most 2.0 of 10) for every unit."""
    for unit in written_units(fleet, tmp_path / "out"):
        res = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", os.fspath(unit)],
                             capture_output=True, text=True)
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", res.stdout)
        assert m, res.stdout + res.stderr
        assert float(m.group(1)) <= 2.0, res.stdout


# --- the real vblade --------------------------------------------------------------------------------------

def _can_netns() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespace)"
    if shutil.which("ip") is None:
        return "ip not found (Debian package iproute2)"
    if not os.access("/usr/sbin/vblade", os.X_OK):
        return "/usr/sbin/vblade not found (Debian package vblade)"
    return None


needs_netns = pytest.mark.skipif(_can_netns() is not None, reason=_can_netns() or "")

SERVER_IF, CLIENT_IF = "aoe-srv", "aoe-cli"
ALLOWED, OTHER = "52:54:00:12:34:56", "52:54:00:99:99:99"


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace with a veth pair: SERVER_IF for vblade, CLIENT_IF (MAC ALLOWED) for a
    client."""
    name = f"nbg-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        ip = ["ip", "-n", name, "link"]
        subprocess.run([*ip, "add", SERVER_IF, "type", "veth", "peer", "name", CLIENT_IF], check=True)
        subprocess.run([*ip, "set", CLIENT_IF, "address", ALLOWED], check=True)
        for dev in (SERVER_IF, CLIENT_IF):
            subprocess.run([*ip, "set", dev, "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def served(tmp_path: Path, **export: object) -> str:
    """The unit rendered for one machine (MAC ALLOWED) booting from an export on SERVER_IF."""
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(8 << 20)  # 16384 sectors
    extra = "".join(f"{k} = {str(v).lower() if isinstance(v, bool) else v}\n" for k, v in export.items())
    inv = load(tmp_path, f"""\
[profiles.p]
[servers.s]
interface = "{SERVER_IF}"
[exports.e]
server = "s"
shelf = 3
slot = 7
path = "{image}"
{extra}[machines.m]
macs = ["{ALLOWED}"]
export = "e"
profile = "p"
""")
    return render_units(inv)["export/netbootgen-aoe-e.service"].text


class Vblade:
    """The unit's ExecStart run in `netns`; its first output line is vblade's startup report."""

    def __init__(self, netns: str, argv: list[str]) -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", netns, *argv], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)

    def first_line(self, timeout: float = 10) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, "vblade printed nothing"
        return self.proc.stdout.readline().strip()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


Start = Callable[[list[str]], Vblade]


@pytest.fixture
def start(netns: str) -> Iterator[Start]:
    started: list[Vblade] = []

    def run(argv: list[str]) -> Vblade:
        v = Vblade(netns, argv)
        started.append(v)
        return v

    yield run
    for v in started:
        v.stop()


@needs_netns
def test_vblade_accepts_the_rendered_arguments(tmp_path: Path, start: Start) -> None:
    argv = exec_argv(served(tmp_path, sync=True, direct=True, offset=2048, length=4096, bufcnt=8))
    assert argv[:2] == ["/usr/sbin/vblade", "-b"] and "-o" in argv and "-l" in argv
    line = start(argv).first_line()
    assert re.fullmatch(r"pid \d+: e3\.7, 4096 sectors O_RDWR", line), line


@needs_netns
def test_vblade_accepts_a_read_only_export(tmp_path: Path, start: Start) -> None:
    line = start(exec_argv(served(tmp_path, readonly=True))).first_line()
    assert re.fullmatch(r"pid \d+: e3\.7, 16384 sectors O_RDONLY", line), line


# A client on CLIENT_IF: broadcast an AoE config query (AoE header: ver/flags 0x10, error, major 0xffff,
# minor 0xff, command 1, tag; config header: bufcnt, firmware, sector count, ccmd 0 = read, config length)
# and print the responder's shelf.slot, or "none" after the timeout.
CLIENT = """
import socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88A2))
s.bind((sys.argv[1], 0x88A2))
src = s.getsockname()[4]
tag = 0x4E424700
frame = b"\\xff" * 6 + src + struct.pack("!HBBHBBI", 0x88A2, 0x10, 0, 0xFFFF, 0xFF, 1, tag) + bytes(8)
s.send(frame.ljust(60, b"\\0"))
end = time.monotonic() + float(sys.argv[2])
while (left := end - time.monotonic()) > 0:
    s.settimeout(left)
    try:
        reply = s.recv(2048)
    except socket.timeout:
        break
    flags, _, major, minor, cmd, rtag = struct.unpack("!BBHBBI", reply[14:24])
    if flags & 0x08 and rtag == tag and reply[:6] == src:
        print(f"e{major}.{minor}")
        sys.exit(0)
print("none")
"""


def query(netns: str, timeout: float) -> str:
    argv = ["ip", "netns", "exec", netns, sys.executable, "-c", CLIENT, CLIENT_IF, str(timeout)]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 20)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


@needs_netns
def test_vblade_answers_only_the_machines_of_the_export(tmp_path: Path, netns: str, start: Start) -> None:
    start(exec_argv(served(tmp_path))).first_line()
    assert query(netns, 5) == "e3.7"
    subprocess.run(["ip", "-n", netns, "link", "set", CLIENT_IF, "address", OTHER], check=True)
    assert query(netns, 1.5) == "none"  # deny by default: a MAC not in the inventory gets no answer
