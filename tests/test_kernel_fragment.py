"""Kernel config fragments: their lines, the Kconfig symbols the loader requires, and those symbols against
Debian's real kernel."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import tempfile
import textwrap
from pathlib import Path

import pytest

from netbootgen.cache import cache_dir
from netbootgen.errors import InventoryError, NetbootgenError
from netbootgen.inventory import Inventory, Profile, load_inventory
from netbootgen.kconfig import FS_SYMBOLS, NIC_DRIVERS
from netbootgen.kernel.fetch import KernelTree, fetch_kernel
from netbootgen.kernel.fragment import fragment_groups, render_fragments

# merge_config.sh's two patterns for a symbol line (SED_CONFIG_EXP1/2).
SET_RE = re.compile(r"^(CONFIG_[a-zA-Z0-9_]*)=(.*)$")
UNSET_RE = re.compile(r"^# (CONFIG_[a-zA-Z0-9_]*) is not set$")

BASE = """\
    [servers.s]
    interface = "eth0"

    [exports.e1]
    server = "s"
    shelf = 0
    slot = 1
    path = "/srv/1.img"

    [machines.m1]
    macs = ["52:54:00:00:00:01"]
    export = "e1"
    profile = "p"
"""


def load(tmp_path: Path, profile: str, base: str = BASE) -> Inventory:
    path = tmp_path / "inv.toml"
    path.write_text(textwrap.dedent(base) + "\n[profiles.p]\n" + textwrap.dedent(profile))
    return load_inventory(path)


def fragment(tmp_path: Path, profile: str, base: str = BASE) -> str:
    return render_fragments(load(tmp_path, profile, base))["kernel/p.config"].text


def options(text: str) -> dict[str, str]:
    """Symbol -> value ('n' for '# ... is not set'), as merge_config.sh reads the fragment."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = SET_RE.match(line)
        if m:
            out[m.group(1)] = m.group(2)
        elif (m := UNSET_RE.match(line)) is not None:
            out[m.group(1)] = "n"
    return out


# --- the fragment's form ----------------------------------------------------------------------------------

def test_every_line_is_a_symbol_a_comment_or_blank(tmp_path: Path) -> None:
    text = fragment(tmp_path, 'nic_drivers = { e1000e = "y", virtio_net = "m" }\n'
                              'config = { CONFIG_DEBUG_INFO = "n" }\n')
    symbols = []
    for line in text.splitlines():
        if SET_RE.match(line) or UNSET_RE.match(line):
            symbols.append(line.lstrip("# ").split("=")[0].split(" ")[0])
        else:
            assert line == "" or line.startswith("# "), line
            # merge_config.sh greps for symbol names: other comments must not mention one.
            assert "CONFIG_" not in line, line
    assert len(symbols) == len(set(symbols)), "a symbol appears twice"
    assert "# CONFIG_DEBUG_INFO is not set" in text.splitlines()


def test_the_example_profile(tmp_path: Path) -> None:
    opts = options(render_fragments(load_inventory(None))["kernel/virtio.config"].text)
    assert opts == {
        "CONFIG_NET": "y", "CONFIG_BLK_DEV": "y", "CONFIG_ATA_OVER_ETH": "m",
        "CONFIG_NETDEVICES": "y", "CONFIG_PCI": "y", "CONFIG_VIRTIO_MENU": "y", "CONFIG_VIRTIO_NET": "m",
        "CONFIG_VIRTIO_PCI": "m",
        "CONFIG_BLK_DEV_INITRD": "y", "CONFIG_RD_GZIP": "y", "CONFIG_RD_ZSTD": "y", "CONFIG_DEVTMPFS": "y",
        "CONFIG_UNIX": "y",
        "CONFIG_PACKET": "y", "CONFIG_EXT4_FS": "y",
        "CONFIG_SERIAL_8250": "y", "CONFIG_SERIAL_8250_CONSOLE": "y",
    }


def test_groups_carry_their_reason(tmp_path: Path) -> None:
    lines = fragment(tmp_path, 'aoe = "y"\n').splitlines()
    i = lines.index("CONFIG_ATA_OVER_ETH=y")
    assert lines[i - 3].startswith("# ATA over Ethernet: the root disk is an AoE target")
    assert lines[lines.index("CONFIG_PACKET=y") - 1].startswith("# Packet sockets:")


def test_drivers_follow_the_profile(tmp_path: Path) -> None:
    opts = options(fragment(tmp_path, 'aoe = "y"\nnic_drivers = { e1000e = "y", igb = "m", tg3 = "m" }\n'))
    assert opts["CONFIG_ATA_OVER_ETH"] == "y"
    assert (opts["CONFIG_E1000E"], opts["CONFIG_IGB"], opts["CONFIG_TIGON3"]) == ("y", "m", "m")
    for menu in ("CONFIG_NET_VENDOR_INTEL", "CONFIG_NET_VENDOR_BROADCOM", "CONFIG_ETHERNET"):
        assert opts[menu] == "y"
    assert "CONFIG_VIRTIO_NET" not in opts


def test_a_built_in_nic_driver_gets_its_bus_driver_built_in(tmp_path: Path) -> None:
    opts = options(fragment(tmp_path, 'nic_drivers = { virtio_net = "y" }\n'))
    assert opts["CONFIG_VIRTIO_NET"] == opts["CONFIG_VIRTIO_PCI"] == "y"


def test_shared_dependency_built_in_wins() -> None:
    groups = fragment_groups(Profile("p", nic_drivers=(("mlx4_en", "m"), ("mlx5_core", "y"))))
    nic = dict(groups[1].options)
    assert (nic["CONFIG_MLX4_EN"], nic["CONFIG_MLX4_CORE"], nic["CONFIG_MLX5_CORE"]) == ("m", "m", "y")
    assert nic["CONFIG_NET_VENDOR_MELLANOX"] == "y"


def test_profile_config_overrides_and_appears_once(tmp_path: Path) -> None:
    text = fragment(tmp_path, 'config = { CONFIG_EXT4_FS = "m", CONFIG_LOCALVERSION = "\\"-aoe\\"", '
                              'CONFIG_SERIAL_8250 = "n" }\n')
    lines = text.splitlines()
    assert lines.count("CONFIG_EXT4_FS=m") == 1 and "CONFIG_EXT4_FS=y" not in lines
    assert 'CONFIG_LOCALVERSION="-aoe"' in lines
    assert "# CONFIG_SERIAL_8250 is not set" in lines and "CONFIG_SERIAL_8250=y" not in lines
    assert lines[lines.index("CONFIG_EXT4_FS=m") - 1].startswith("# Set by profiles.p.config")


def second_machine(fstype: str) -> str:
    """A machine m2 of profile p with its own export and root file system, to append to BASE."""
    return textwrap.dedent(f"""\
        [exports.e2]
        server = "s"
        shelf = 0
        slot = 2
        path = "/srv/2.img"
        [machines.m2]
        macs = ["52:54:00:00:00:02"]
        export = "e2"
        profile = "p"
        fstype = "{fstype}"
    """)


def test_root_file_systems_of_the_profiles_machines(tmp_path: Path) -> None:
    base = BASE + 'fstype = "xfs"\n' + second_machine("ext2")
    opts = options(fragment(tmp_path, "", base))
    assert opts["CONFIG_XFS_FS"] == opts["CONFIG_EXT4_FS"] == opts["CONFIG_EXT4_USE_FOR_EXT2"] == "y"


# --- NIC drivers and file systems without a known symbol: the loader's errors, kconfig_symbols -------------

def load_error(tmp_path: Path, profile: str, base: str = BASE) -> InventoryError:
    with pytest.raises(InventoryError) as e:
        load(tmp_path, profile, base)
    assert e.value.exit_code == 2
    return e.value


def test_unknown_nic_driver_is_an_error_at_load(tmp_path: Path) -> None:
    (problem,) = load_error(tmp_path, 'nic_drivers = { r8152 = "m" }\n').problems
    assert problem.startswith("profiles.p.nic_drivers.r8152: netbootgen does not know the Kconfig symbol of "
                              "NIC driver 'r8152'")
    assert 'give its symbol in profiles.p.kconfig_symbols, e.g. kconfig_symbols = { r8152 = "CONFIG_' in problem


def test_unknown_nic_driver_is_an_error_whatever_config_holds(tmp_path: Path) -> None:
    """The loophole of issue 8: any "y"/"m" option in config used to stand for the missing symbol, and the
    fragment then had no symbol for the driver at all."""
    error = load_error(tmp_path, 'nic_drivers = { r8152 = "m" }\nconfig = { CONFIG_DEBUG_INFO = "y" }\n')
    (problem,) = error.problems
    assert problem.startswith("profiles.p.nic_drivers.r8152: ") and "'r8152'" in problem


def test_unknown_file_system_is_an_error_whatever_config_holds(tmp_path: Path) -> None:
    error = load_error(tmp_path, 'config = { CONFIG_DEBUG_INFO = "y" }\n', BASE + 'fstype = "zfs"\n')
    (problem,) = error.problems
    assert problem.startswith("machines.m1.fstype: netbootgen does not know the Kconfig symbol of file system "
                              "'zfs'")
    assert "give its symbol in profiles.p.kconfig_symbols" in problem


def test_unknown_file_system_is_reported_once_per_profile(tmp_path: Path) -> None:
    base = BASE + 'fstype = "zfs"\n' + second_machine("zfs")
    (problem,) = load_error(tmp_path, "", base).problems
    assert problem.startswith("machines.m1.fstype: ")


def test_kconfig_symbols_give_the_missing_symbols(tmp_path: Path) -> None:
    text = fragment(tmp_path, 'nic_drivers = { r8152 = "m", virtio_net = "y" }\n'
                              'kconfig_symbols = { r8152 = "CONFIG_USB_RTL8152", zfs = "CONFIG_ZFS" }\n'
                              'config = { CONFIG_USB_NET_DRIVERS = "y" }\n', BASE + 'fstype = "zfs"\n')
    opts = options(text)
    assert opts["CONFIG_USB_RTL8152"] == "m" and opts["CONFIG_VIRTIO_NET"] == "y"
    assert opts["CONFIG_ZFS"] == "y" and "CONFIG_EXT4_FS" not in opts
    assert opts["CONFIG_USB_NET_DRIVERS"] == "y"
    assert load(tmp_path, 'nic_drivers = { r8152 = "m" }\nkconfig_symbols = { r8152 = "CONFIG_USB_RTL8152" }\n'
                ).profiles["p"].kconfig_symbols == (("r8152", "CONFIG_USB_RTL8152"),)


def test_kconfig_symbols_may_repeat_a_known_symbol(tmp_path: Path) -> None:
    profile = ('nic_drivers = { e1000e = "m" }\n'
               'kconfig_symbols = { e1000e = "CONFIG_E1000E", ext2 = "CONFIG_EXT4_FS" }\n')
    assert options(fragment(tmp_path, profile, BASE + 'fstype = "ext2"\n')) == options(
        fragment(tmp_path, 'nic_drivers = { e1000e = "m" }\n', BASE + 'fstype = "ext2"\n'))


@pytest.mark.parametrize(("profile", "key", "value"), [
    pytest.param('nic_drivers = { r8152 = "m" }\nkconfig_symbols = { r8152 = "usb_rtl8152" }\n',
                 "profiles.p.kconfig_symbols.r8152", "'usb_rtl8152' is not a Kconfig symbol", id="lower-case"),
    pytest.param('nic_drivers = { r8152 = "m" }\nkconfig_symbols = { r8152 = "CONFIG_USB_RTL8152=m" }\n',
                 "profiles.p.kconfig_symbols.r8152", "'CONFIG_USB_RTL8152=m' is not a Kconfig symbol",
                 id="with-value"),
    pytest.param('nic_drivers = { r8152 = "m" }\nkconfig_symbols = { r8152 = 1 }\n',
                 "profiles.p.kconfig_symbols.r8152", "1 is not a Kconfig symbol", id="not-a-string"),
    pytest.param('kconfig_symbols = { r8152 = "CONFIG_USB_RTL8152" }\n',
                 "profiles.p.kconfig_symbols.r8152", "'r8152' is neither a NIC driver of profiles.p (virtio_net) "
                 "nor the fstype of one of its machines (ext4)", id="driver-not-in-profile"),
    pytest.param('kconfig_symbols = { zfs = "CONFIG_ZFS" }\n',
                 "profiles.p.kconfig_symbols.zfs", "'zfs' is neither", id="fs-not-used"),
    pytest.param('nic_drivers = { e1000e = "m" }\nkconfig_symbols = { e1000e = "CONFIG_E1000" }\n',
                 "profiles.p.kconfig_symbols.e1000e", "'CONFIG_E1000': netbootgen knows the symbol of NIC driver "
                 "'e1000e' (CONFIG_E1000E)", id="contradicts-the-table"),
    pytest.param('kconfig_symbols = { ext4 = "CONFIG_EXT3_FS" }\n',
                 "profiles.p.kconfig_symbols.ext4", "'CONFIG_EXT3_FS': netbootgen knows the symbols of file "
                 "system 'ext4' (CONFIG_EXT4_FS)", id="contradicts-the-fs-table"),
    pytest.param('kconfig_symbols = "CONFIG_USB_RTL8152"\n',
                 "profiles.p.kconfig_symbols", "must be a table", id="not-a-table"),
])
def test_bad_kconfig_symbols(tmp_path: Path, profile: str, key: str, value: str) -> None:
    (problem,) = load_error(tmp_path, profile).problems
    assert problem.startswith(f"{key}: {value}"), problem


def test_the_fragment_only_renders(tmp_path: Path) -> None:
    """A Profile the loader did not check (no symbol for r8152) is an internal error, not an inventory one."""
    with pytest.raises(NetbootgenError, match="internal error: no Kconfig symbol for NIC driver 'r8152'") as e:
        fragment_groups(Profile("p", nic_drivers=(("r8152", "m"),), config=(("CONFIG_DEBUG_INFO", "y"),)))
    assert not isinstance(e.value, InventoryError)


def test_fragment_is_deterministic(tmp_path: Path) -> None:
    profile = 'nic_drivers = { tg3 = "m", e1000e = "y", virtio_net = "m" }\n'
    assert fragment(tmp_path, profile) == fragment(tmp_path, profile)


# --- against Debian's kernel ------------------------------------------------------------------------------

def _cached_kernel() -> KernelTree | None:
    for config in sorted(glob.glob(os.fspath(cache_dir() / "kernels/*/boot/config-*"))):
        root = Path(config).parents[1]
        if (root / ".complete").exists():
            return KernelTree(Path(config).name.removeprefix("config-"), root)
    try:
        return fetch_kernel("auto", cache_dir())
    except NetbootgenError:
        return None


@pytest.fixture(scope="module")
def kernel() -> KernelTree:
    tree = _cached_kernel()
    if tree is None:
        pytest.skip("no Debian kernel in the cache and none could be fetched (make kernel)")
    return tree


@pytest.fixture(scope="module")
def debian_config(kernel: KernelTree) -> dict[str, str]:
    return options(kernel.config.read_text())


def all_table_symbols() -> set[str]:
    syms = {s for d in NIC_DRIVERS.values() for s in (d.symbol, *d.under, *d.with_)}
    return syms | {s for fs in FS_SYMBOLS.values() for s in fs}


def test_every_symbol_exists_in_debians_kernel(tmp_path: Path, debian_config: dict[str, str]) -> None:
    """Debian's config lists every symbol its kernel offers (set or 'is not set'): a symbol missing from it
    is misspelt, gone, or unreachable on amd64."""
    everything = ", ".join(f"{d} = \"m\"" for d in sorted(NIC_DRIVERS))
    ours = set(options(fragment(tmp_path, f"nic_drivers = {{ {everything} }}\n")))
    assert sorted((ours | all_table_symbols()) - debian_config.keys()) == []


def _modules(kernel: KernelTree) -> dict[str, str]:
    """Module name ('-' read as '_') -> its path under lib/modules/VERSION, from modules.dep."""
    out = {}
    for line in (kernel.moddir / "modules.dep").read_text().splitlines():
        path = line.split(":", 1)[0]
        name = Path(path).name.split(".ko")[0].replace("-", "_")
        out[name] = path
    return out


def test_each_nic_driver_is_the_module_of_its_symbol(kernel: KernelTree,
                                                     debian_config: dict[str, str]) -> None:
    """Where Debian builds a driver of the table as a module, the module exists, under the vendor folder that
    its NET_VENDOR_ option guards."""
    modules = _modules(kernel)
    for driver, d in sorted(NIC_DRIVERS.items()):
        if debian_config[d.symbol] != "m":
            continue
        assert driver in modules, f"{driver}: no such module in {kernel.version}"
        vendors = [s.removeprefix("CONFIG_NET_VENDOR_").lower() for s in d.under if "NET_VENDOR_" in s]
        for vendor in vendors:
            assert f"/ethernet/{vendor}/" in modules[driver], (driver, modules[driver])


def _merge_config() -> Path:
    """The kernel's own scripts/kconfig/merge_config.sh. Debian ships it only inside linux-source's tarball
    (not in linux-kbuild or linux-headers): download that package once and keep just the script in the cache."""
    env = os.environ.get("NETBOOTGEN_MERGE_CONFIG")
    if env:
        return Path(env)
    found = sorted(glob.glob("/usr/src/linux*/scripts/kconfig/merge_config.sh"))
    if found:
        return Path(found[-1])
    script = cache_dir() / "merge_config.sh"
    if script.exists():
        return script
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o777)  # apt-get download drops privileges to _apt
        subprocess.run(["apt-get", "download", "linux-source-6.1"], cwd=tmp, check=True, capture_output=True)
        deb = next(Path(tmp).glob("linux-source-6.1_*.deb"))
        member = "linux-source-6.1/scripts/kconfig/merge_config.sh"
        pipeline = (f"dpkg --fsys-tarfile {deb} | tar -xO ./usr/src/linux-source-6.1.tar.xz"
                    f" | tar -xJ -C {tmp} {member}")
        subprocess.run(["sh", "-c", pipeline], check=True, capture_output=True)
        script.parent.mkdir(parents=True, exist_ok=True)
        os.replace(Path(tmp) / member, script)
    return script


def test_real_merge_config_merges_the_fragment(tmp_path: Path, kernel: KernelTree,
                                                debian_config: dict[str, str]) -> None:
    inv = load_inventory(None)
    frag = tmp_path / "virtio.config"
    frag.write_text(render_fragments(inv)["kernel/virtio.config"].text)
    script = _merge_config()
    res = subprocess.run(["sh", os.fspath(script), "-m", os.fspath(kernel.config), os.fspath(frag)],
                         cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    merged = options((tmp_path / ".config").read_text())
    ours = options(frag.read_text())
    assert {s: merged[s] for s in ours} == ours
    # Only what the fragment changes is reported as redefined, and Debian's other options are kept.
    redefined = set(re.findall(r"Value of (CONFIG_\w+) is redefined", res.stdout))
    assert redefined == {s for s, v in ours.items() if s in debian_config and debian_config[s] != v}
    assert {s: v for s, v in merged.items() if s not in ours} == {s: v for s, v in debian_config.items()
                                                                 if s not in ours}
