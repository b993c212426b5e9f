"""Inventory validation through the real CLI: every error kind, each naming its key path and value, exit 2."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from netbootgen.errors import InventoryError
from netbootgen.inventory import load_inventory, normalize_mac

N1_MACS = 'macs = ["52:54:00:12:34:56"]'
N2_MACS = 'macs = ["52:54:00:12:34:57"]'
N1_SERIAL = 'serial_console = "ttyS0,115200"'
N2_EXPORT = 'export = "root-node2"'
DEFAULT_PROFILE = 'profile = "virtio"'
EX1_PATH = 'path = "/srv/aoe/node1.img"'
EX1_TARGET = "shelf = 0\nslot = 1"
NIC_DRIVERS = 'nic_drivers = { virtio_net = "m" }'
DEBUG_INFO = 'config = { CONFIG_DEBUG_INFO = "y" }'


def error_lines(res: Result) -> list[str]:
    return [line.strip() for line in res.output.splitlines()]


def assert_reported(res: Result, key: str, value: str) -> None:
    """Exit status 2, and one error line names `key` (as 'KEY: ...') and shows `value`."""
    assert res.exit_code == 2, res.output
    assert any(f": {key}: " in line and value in line for line in error_lines(res)), (
        f"no error line names {key} with {value}:\n{res.output}"
    )


# (id, edits of the base inventory, key path, the bad value as the message shows it)
CASES: list[tuple[str, list[tuple[str, str]], str, str]] = [
    # malformed MAC
    ("mac-not-hex", [(N2_MACS, 'macs = ["52:54:00:zz:34:57"]')], "machines.node2.macs[0]", "'52:54:00:zz:34:57'"),
    ("mac-too-short", [(N2_MACS, 'macs = ["52:54:00:12:34"]')], "machines.node2.macs[0]", "'52:54:00:12:34'"),
    ("mac-mixed-separators", [(N2_MACS, 'macs = ["52:54-00:12:34:57"]')], "machines.node2.macs[0]",
     "'52:54-00:12:34:57'"),
    ("mac-second-nic", [(N2_MACS, 'macs = ["52:54:00:12:34:57", "52:54:00:12:34:5"]')], "machines.node2.macs[1]",
     "'52:54:00:12:34:5'"),
    ("mac-multicast", [(N2_MACS, 'macs = ["01:00:5e:00:00:01"]')], "machines.node2.macs[0]", "'01:00:5e:00:00:01'"),
    ("mac-broadcast", [(N2_MACS, 'macs = ["ff:ff:ff:ff:ff:ff"]')], "machines.node2.macs[0]", "'ff:ff:ff:ff:ff:ff'"),
    ("mac-empty-list", [(N2_MACS, "macs = []")], "machines.node2.macs", "at least one"),
    ("mac-not-a-string", [(N2_MACS, "macs = [525400123457]")], "machines.node2.macs", "[525400123457]"),
    # the same MAC twice, whatever its case or separator style
    *[
        (f"mac-duplicate-{style}", [(N1_MACS, 'macs = ["52:54:00:AA:BB:CC"]'), (N2_MACS, f'macs = ["{dup}"]')],
         "machines.node2.macs[0]", f"'{dup}'")
        for style, dup in [("same", "52:54:00:AA:BB:CC"), ("lower", "52:54:00:aa:bb:cc"),
                           ("dashes", "52-54-00-aa-bb-cc"), ("cisco", "5254.00aa.bbcc"), ("bare", "525400AABBCC")]
    ],
    ("mac-duplicate-in-one-machine", [(N1_MACS, 'macs = ["52:54:00:12:34:56", "52-54-00-12-34-56"]')],
     "machines.node1.macs[1]", "'52-54-00-12-34-56'"),
    # two exports on one shelf.slot
    ("shelf-slot-twice", [("slot = 2", "slot = 1")], "exports.root-node2", "0.1"),
    # broadcast shelf / slot, and beyond
    ("shelf-broadcast", [(EX1_TARGET, "shelf = 65535\nslot = 1")], "exports.root-node1.shelf", "65535"),
    ("shelf-too-big", [(EX1_TARGET, "shelf = 70000\nslot = 1")], "exports.root-node1.shelf", "70000"),
    ("shelf-negative", [(EX1_TARGET, "shelf = -1\nslot = 1")], "exports.root-node1.shelf", "-1"),
    ("slot-broadcast", [(EX1_TARGET, "shelf = 0\nslot = 255")], "exports.root-node1.slot", "255"),
    ("slot-not-a-number", [(EX1_TARGET, 'shelf = 0\nslot = "1"')], "exports.root-node1.slot", "'1'"),
    # references to missing profiles, servers, exports
    ("missing-profile", [(N2_EXPORT, N2_EXPORT + '\nprofile = "e1000e"')], "machines.node2.profile", "'e1000e'"),
    ("missing-default-profile", [(DEFAULT_PROFILE, 'profile = "virtoi"')], "defaults.profile", "'virtoi'"),
    ("missing-server", [('server = "store1"', 'server = "store9"')], "exports.root-node1.server", "'store9'"),
    ("missing-export", [(N2_EXPORT, 'export = "root-node9"')], "machines.node2.export", "'root-node9'"),
    # unknown keys, at every level
    ("unknown-top-level", [("[defaults]", "verbose = true\n\n[defaults]")], "verbose", "'verbose'"),
    ("unknown-section", [("[machines.node2]", "[machine.node2]")], "machine", "'machine'"),
    ("unknown-in-defaults", [(DEFAULT_PROFILE, DEFAULT_PROFILE + '\nprofle = "virtio"')], "defaults.profle",
     "'profle'"),
    ("unknown-in-profile", [('nic_drivers = {', 'nic_driver = {')], "profiles.virtio.nic_driver", "'nic_driver'"),
    ("unknown-in-server", [("mtu = 1500", "mut = 1500")], "servers.store1.mut", "'mut'"),
    ("unknown-in-export", [(EX1_PATH, EX1_PATH + "\nread_only = true")], "exports.root-node1.read_only",
     "'read_only'"),
    ("unknown-in-machine", [(N1_SERIAL, 'serial = "ttyS0,115200"')], "machines.node1.serial", "'serial'"),
    ("entry-not-a-table", [("[machines.node1]", '[machines]\nnode0 = "x"\n\n[machines.node1]')], "machines.node0",
     "'x'"),
    ("value-wrong-type", [(N1_SERIAL, N1_SERIAL + '\nmtu = "9000"')], "machines.node1.mtu", "'9000'"),
    # names that are not safe as file and unit names
    *[
        (f"unsafe-machine-name-{i}", [("[machines.node1]", f"[machines.{toml_key}]")], key, value)
        for i, (toml_key, key, value) in enumerate([
            ('"node 1"', 'machines."node 1"', "'node 1'"),
            ('"../etc"', 'machines."../etc"', "'../etc'"),
            ('"node1/x"', 'machines."node1/x"', "'node1/x'"),
            ('"a..b"', 'machines."a..b"', "'a..b'"),
            ('"$(reboot)"', 'machines."$(reboot)"', "'$(reboot)'"),
            ('"node;rm"', 'machines."node;rm"', "'node;rm'"),
            ('"node`id`"', 'machines."node`id`"', "'node`id`'"),
            ("-rf", "machines.-rf", "'-rf'"),
            ('".hidden"', 'machines.".hidden"', "'.hidden'"),
            ('"node1\\n"', 'machines."node1\\n"', "'node1\\n'"),
            ('"nöde"', 'machines."nöde"', "'nöde'"),
            ("n" * 65, "machines." + "n" * 65, "'nnnnn"),
        ])
    ],
    ("unsafe-export-name", [("[exports.root-node2]", '[exports."root node2"]')], 'exports."root node2"',
     "'root node2'"),
    ("unsafe-server-name", [("[servers.store1]", '[servers."store/1"]')], 'servers."store/1"', "'store/1'"),
    ("unsafe-profile-name", [("[profiles.virtio]", '[profiles."vir tio"]')], 'profiles."vir tio"', "'vir tio'"),
    # kernel arguments with a quote, newline or control character
    *[
        (f"kernel-arg-{what}", [(N1_SERIAL, f'{N1_SERIAL}\nkernel_args = ["quiet", "{toml}"]')],
         "machines.node1.kernel_args[1]", shown)
        for what, toml, shown in [
            ("double-quote", 'init=\\"/bin/sh\\"', "'init=\"/bin/sh\"'"),
            ("single-quote", "init='/bin/sh'", "\"init='/bin/sh'\""),
            ("newline", "panic=1\\nrw", "'panic=1\\nrw'"),
            ("tab", "a\\tb", "'a\\tb'"),
            ("escape", "x\\u001b[0m", "'x\\x1b[0m'"),
            ("del", "x\\u007f", "'x\\x7f'"),
        ]
    ],
    ("kernel-arg-in-defaults", [(DEFAULT_PROFILE, DEFAULT_PROFILE + '\nkernel_args = ["ok", "bad\\n"]')],
     "defaults.kernel_args[1]", "'bad\\n'"),
    # MTU outside 576-9216, on a machine and on a server
    ("machine-mtu-low", [(N1_SERIAL, N1_SERIAL + "\nmtu = 575")], "machines.node1.mtu", "575"),
    ("machine-mtu-high", [(N1_SERIAL, N1_SERIAL + "\nmtu = 9217")], "machines.node1.mtu", "9217"),
    ("server-mtu-low", [("mtu = 1500", "mtu = 500")], "servers.store1.mtu", "500"),
    ("server-mtu-high", [("mtu = 1500", "mtu = 65536")], "servers.store1.mtu", "65536"),
    # a writable export used by two machines
    ("writable-export-shared", [(N2_EXPORT, 'export = "root-node1"')], "machines.node2.export", "'root-node1'"),
    # export paths go into the vblade unit
    ("export-path-relative", [(EX1_PATH, 'path = "srv/node1.img"')], "exports.root-node1.path", "'srv/node1.img'"),
    ("export-path-newline", [(EX1_PATH, 'path = "/srv/a\\nb.img"')], "exports.root-node1.path", "'/srv/a\\nb.img'"),
    # interface names Linux refuses ('..' would also break the vblade unit's device unit name)
    *[(f"server-interface-{name}", [('interface = "eth0"', f'interface = "{dots}"')], "servers.store1.interface",
       f"'{dots}'") for name, dots in [("dot", "."), ("dotdot", "..")]],
    # a NIC driver or root file system without a Kconfig symbol, whatever config holds (issue 8)
    ("nic-driver-without-symbol", [(NIC_DRIVERS, 'nic_drivers = { r8152 = "m" }\n' + DEBUG_INFO)],
     "profiles.virtio.nic_drivers.r8152", "'r8152'"),
    ("fstype-without-symbol",
     [(NIC_DRIVERS, NIC_DRIVERS + "\n" + DEBUG_INFO), (N2_EXPORT, N2_EXPORT + '\nfstype = "zfs"')],
     "machines.node2.fstype", "'zfs'"),
    ("kconfig-symbol-malformed",
     [(NIC_DRIVERS, 'nic_drivers = { r8152 = "m" }\nkconfig_symbols = { r8152 = "r8152" }')],
     "profiles.virtio.kconfig_symbols.r8152", "'r8152' is not a Kconfig symbol"),
    ("kconfig-symbol-unused", [(NIC_DRIVERS, NIC_DRIVERS + '\nkconfig_symbols = { r8152 = "CONFIG_USB_RTL8152" }')],
     "profiles.virtio.kconfig_symbols.r8152", "'r8152' is neither a NIC driver"),
]


@pytest.mark.parametrize(("edits", "key", "value"), [pytest.param(e, k, v, id=i) for i, e, k, v in CASES])
def test_validate_reports_key_and_value(
    make_inventory: Callable[..., Path], cli: Callable[..., Result], edits: list[tuple[str, str]], key: str, value: str
) -> None:
    res = cli("validate", make_inventory(*edits))
    assert_reported(res, key, value)


def test_duplicate_mac_names_the_first_use(make_inventory: Callable[..., Path], cli: Callable[..., Result]) -> None:
    # node1's first MAC is malformed: the duplicate must still point at node1's macs[1], not macs[0].
    path = make_inventory((N1_MACS, 'macs = ["zz", "52:54:00:12:34:57"]'))
    res = cli("validate", path)
    assert_reported(res, "machines.node1.macs[0]", "'zz'")
    assert_reported(res, "machines.node2.macs[0]", "already used by machines.node1.macs[1]")


def test_writable_export_names_the_other_machine(
    make_inventory: Callable[..., Path], cli: Callable[..., Result]
) -> None:
    res = cli("validate", make_inventory((N2_EXPORT, 'export = "root-node1"')))
    assert_reported(res, "machines.node2.export", "already used by machines.node1")
    assert "readonly = true" in res.output


def test_toml_syntax_error(write_inventory: Callable[..., Path], cli: Callable[..., Result]) -> None:
    path = write_inventory('[machines.node1]\nmacs = ["52:54:00:12:34:56"\nexport = "root"\n')
    res = cli("validate", path)
    assert res.exit_code == 2, res.output
    assert f"{path}: not valid TOML" in res.output
    assert "line 3" in res.output


def test_missing_file(tmp_path: Path, cli: Callable[..., Result]) -> None:
    path = tmp_path / "nowhere.toml"
    res = cli("validate", path)
    assert res.exit_code == 2, res.output
    assert f"{path}: cannot read: No such file or directory" in res.output


def test_not_utf8(write_inventory: Callable[..., Path], cli: Callable[..., Result]) -> None:
    path = write_inventory("")
    path.write_bytes(b"# caf\xe9\n")
    res = cli("validate", path)
    assert res.exit_code == 2, res.output
    assert "not UTF-8" in res.output


def test_every_error_is_reported_at_once(make_inventory: Callable[..., Path], cli: Callable[..., Result]) -> None:
    path = make_inventory(
        ("[defaults]", "verbose = true\n\n[defaults]"),
        ("mtu = 1500", "mtu = 100"),
        (EX1_TARGET, "shelf = 65535\nslot = 1"),
        ("slot = 2", "slot = 255"),
        (N1_MACS, 'macs = ["52:54:00:12:34:5g"]'),
        (N1_SERIAL, N1_SERIAL + '\nkernel_args = ["a\\"b"]\nmtu = 10000'),
        (N2_MACS, 'macs = ["52:54:00:12:34:58", "52-54-00-12-34-58"]'),
        (N2_EXPORT, 'export = "root-node9"\nprofile = "nope"'),
        ("[machines.node2]", '[machines."node 3"]\nmacs = ["52:54:00:00:00:03"]\nexport = "root-node2"\n\n'
                             "[machines.node2]"),
    )
    res = cli("validate", path)
    expected = [
        ("verbose", "'verbose'"),
        ("servers.store1.mtu", "100"),
        ("exports.root-node1.shelf", "65535"),
        ("exports.root-node2.slot", "255"),
        ("machines.node1.macs[0]", "'52:54:00:12:34:5g'"),
        ("machines.node1.kernel_args[0]", "'a\"b'"),
        ("machines.node1.mtu", "10000"),
        ("machines.node2.macs[1]", "'52-54-00-12-34-58'"),
        ("machines.node2.export", "'root-node9'"),
        ("machines.node2.profile", "'nope'"),
        ('machines."node 3"', "'node 3'"),
    ]
    for key, value in expected:
        assert_reported(res, key, value)
    assert f"{len(expected)} error(s) in the inventory" in res.output


def test_validate_closes_the_config_loophole(make_inventory: Callable[..., Path], cli: Callable[..., Result]) -> None:
    """Issue 8: `config` setting some option used to hide an unknown NIC driver; validate passed and the
    fragment had no symbol for it. Now validate (which renders nothing) names the driver and the fix."""
    path = make_inventory((NIC_DRIVERS, 'nic_drivers = { r8152 = "m" }\n' + DEBUG_INFO))
    res = cli("validate", path)
    assert_reported(res, "profiles.virtio.nic_drivers.r8152", "'r8152'")
    assert "1 error(s) in the inventory" in res.output
    assert 'kconfig_symbols = { r8152 = "CONFIG_' in res.output
    fixed = make_inventory((NIC_DRIVERS, 'nic_drivers = { r8152 = "m" }\n' + DEBUG_INFO +
                                         '\nkconfig_symbols = { r8152 = "CONFIG_USB_RTL8152" }'))
    cli("validate", fixed, expect=0)
    assert load_inventory(fixed).profiles["virtio"].kconfig_symbols == (("r8152", "CONFIG_USB_RTL8152"),)


def test_validate_does_not_render(
    make_inventory: Callable[..., Path], cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_render(*_: object) -> None:
        raise AssertionError("validate rendered the inventory")

    monkeypatch.setattr("netbootgen.generate.render_inventory", no_render)
    cli("validate", make_inventory(), expect=0)


def test_valid_inventory(make_inventory: Callable[..., Path], cli: Callable[..., Result]) -> None:
    res = cli("validate", make_inventory(), expect=0)
    assert "ok (2 machines, 2 exports, 1 servers, 1 profiles)" in res.output


def test_limits_and_sharing_that_are_allowed(make_inventory: Callable[..., Path]) -> None:
    path = make_inventory(
        (EX1_TARGET, "shelf = 65534\nslot = 254"),
        (EX1_PATH, EX1_PATH + "\nreadonly = true"),
        (N2_EXPORT, 'export = "root-node1"\nmtu = 9216\nserial_console = ""'),  # read-only: may be shared
        (N1_SERIAL, N1_SERIAL + "\nmtu = 576"),
        ("mtu = 1500", "mtu = 9000"),
        (N1_MACS, 'macs = ["52-54-00-AA-BB-CC", "5254.00aa.bbcd"]'),
    )
    inv = load_inventory(path)
    assert inv.machines["node1"].macs == ("52:54:00:aa:bb:cc", "52:54:00:aa:bb:cd")
    assert inv.machines["node1"].mtu == 576 and inv.machines["node2"].mtu == 9216
    assert inv.machines["node2"].serial_console is None  # "" switches a console off
    assert inv.exports["root-node1"].target == "e65534.254"
    assert [m.name for m in inv.export_users["root-node1"]] == ["node1", "node2"]
    assert inv.export_users["root-node2"] == ()


def test_library_raises_and_prints_nothing(
    make_inventory: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_inventory((N2_MACS, 'macs = ["bad"]'), ("mtu = 1500", "mtu = 1"))
    with pytest.raises(InventoryError) as e:
        load_inventory(path)
    assert e.value.exit_code == 2
    assert e.value.source == str(path)
    assert [p.split(":")[0] for p in e.value.problems] == ["servers.store1.mtu", "machines.node2.macs[0]"]
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("52:54:00:12:34:56", "52:54:00:12:34:56"),
        ("52:54:00:AB:CD:EF", "52:54:00:ab:cd:ef"),
        ("52-54-00-ab-cd-ef", "52:54:00:ab:cd:ef"),
        ("5254.00ab.cdef", "52:54:00:ab:cd:ef"),
        ("525400ABCDEF", "52:54:00:ab:cd:ef"),
        (" 52:54:00:ab:cd:ef ", "52:54:00:ab:cd:ef"),
        ("ff:ff:ff:ff:ff:ff", "ff:ff:ff:ff:ff:ff"),  # well-formed; the inventory rejects it as a NIC's MAC
        ("", None),
        ("52:54:00:12:34", None),
        ("52:54:00:12:34:56:78", None),
        ("52:54:00:12:34:5", None),
        ("52:54:00:12:34:5g", None),
        ("52:54-00:12:34:56", None),
        ("52:54:00:12:34:56\n00", None),
        ("5254.00ab.cde", None),
        ("5254:00ab:cdef", None),
        ("525400abcdef0", None),
        ("52::54:00:12:34:56", None),
    ],
)
def test_normalize_mac(value: str, expected: str | None) -> None:
    assert normalize_mac(value) == expected
