"""dnsmasq/netbootgen.conf: the [dhcp] table and machine ip/hostname at load, the rendered lines, and
`dnsmasq --test` on the server and proxy configurations."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from netbootgen.errors import InputError, InventoryError
from netbootgen.generate import render_inventory
from netbootgen.inventory import Inventory, load_inventory
from netbootgen.pxe.dnsmasq import CONF, render_dnsmasq, render_dnsmasq_conf, with_network
from netbootgen.run import run
from tests.conftest import BASE_INVENTORY, edit

SERVER = ("[servers.store1]", '[dhcp]\nsubnet = "192.0.2.0/24"\nrange = ["192.0.2.100", "192.0.2.150"]\n'
                              'router = "192.0.2.1"\ninterface = "br0"\n\n[servers.store1]')
PROXY = ("[servers.store1]", '[dhcp]\nmode = "proxy"\nsubnet = "192.0.2.0/24"\n\n[servers.store1]')
FIXED = ('export = "root-node1"', 'export = "root-node1"\nip = "192.0.2.10"\nhostname = "node-1"')


def load(tmp_path: Path, *replacements: tuple[str, str]) -> Inventory:
    path = tmp_path / "inv.toml"
    path.write_text(edit(BASE_INVENTORY, *replacements))
    return load_inventory(path)


def lines(inv: Inventory) -> list[str]:
    return [x for x in render_dnsmasq(inv)[CONF].text.splitlines() if x and not x.startswith("#")]


def problems(tmp_path: Path, *replacements: tuple[str, str]) -> list[str]:
    with pytest.raises(InventoryError) as e:
        load(tmp_path, *replacements)
    return [p.split(": ", 1)[1] for p in str(e.value).splitlines()[1:]]


def test_no_dhcp_table_no_dnsmasq_file(tmp_path: Path) -> None:
    inv = load(tmp_path)
    assert inv.dhcp is None
    assert not any(name.startswith("dnsmasq/") for name in render_inventory(inv))


def test_server_mode(tmp_path: Path) -> None:
    got = lines(load(tmp_path, SERVER, FIXED))
    assert "port=0" in got and "enable-tftp" in got and "tftp-root=/srv/tftp" in got
    assert "interface=br0" in got
    assert "dhcp-range=192.0.2.100,192.0.2.150,255.255.255.0,1h" in got
    assert "dhcp-option=option:router,192.0.2.1" in got
    assert "dhcp-boot=tag:netbootgen,tag:!efi-x86_64,pxelinux.0" in got
    assert "dhcp-boot=tag:netbootgen,tag:efi-x86_64,grub/x86_64-efi/core.efi" in got
    assert "dhcp-match=set:efi-x86_64,option:client-arch,7" in got
    hosts = [x for x in got if x.startswith("dhcp-host=")]
    assert hosts == ["dhcp-host=52:54:00:12:34:56,set:netbootgen,192.0.2.10,node-1",
                     "dhcp-host=52:54:00:12:34:57,set:netbootgen"]


def test_fixed_addresses_only_without_range(tmp_path: Path) -> None:
    got = lines(load(tmp_path, ("[servers.store1]", '[dhcp]\nsubnet = "10.1.0.0/16"\n\n[servers.store1]')))
    assert "dhcp-range=10.1.0.0,static,255.255.0.0,1h" in got
    assert not any(x.startswith("interface=") for x in got)


def test_proxy_mode(tmp_path: Path) -> None:
    got = lines(load(tmp_path, PROXY))
    assert "dhcp-range=192.0.2.0,proxy,255.255.255.0" in got
    assert 'pxe-service=tag:netbootgen,x86PC,"netbootgen: PXELINUX",pxelinux.0' in got
    assert 'pxe-service=tag:netbootgen,x86-64_EFI,"netbootgen: GRUB",grub/x86_64-efi/core.efi' in got
    assert not any(x.startswith("dhcp-boot=") for x in got)


@pytest.mark.parametrize("mode", [SERVER, PROXY], ids=["server", "proxy"])
def test_unknown_local_boot_gives_bios_clients_pxelinux_and_uefi_clients_nothing(
        tmp_path: Path, mode: tuple[str, str]) -> None:
    """A UEFI client of no machine gets no boot file even with unknown = "local-boot": its PXE option fails and the
    firmware goes on to its next boot option (GRUB 2.06's `exit` would end in the firmware's menu)."""
    got = lines(load(tmp_path, mode, ("[dhcp]", '[dhcp]\nunknown = "local-boot"')))
    if mode is SERVER:
        assert "dhcp-boot=tag:!efi-x86_64,pxelinux.0" in got
        assert "dhcp-boot=tag:netbootgen,tag:efi-x86_64,grub/x86_64-efi/core.efi" in got
    else:
        assert 'pxe-service=x86PC,"netbootgen: PXELINUX",pxelinux.0' in got
        assert 'pxe-service=tag:netbootgen,x86-64_EFI,"netbootgen: GRUB",grub/x86_64-efi/core.efi' in got


def test_several_macs_share_one_fixed_address(tmp_path: Path) -> None:
    inv = load(tmp_path, SERVER, ('macs = ["52:54:00:12:34:56"]', 'macs = ["52:54:00:12:34:56", "52:54:00:12:34:58"]'),
               FIXED)
    assert "dhcp-host=52:54:00:12:34:56,52:54:00:12:34:58,set:netbootgen,192.0.2.10,node-1" in lines(inv)


@pytest.mark.parametrize(("replacements", "expected"), [
    ((("[servers.store1]", '[dhcp]\nmode = "relay"\nsubnet = "192.0.2.0/24"\n\n[servers.store1]'),),
     "'relay' is not one of 'server', 'proxy'"),
    ((("[servers.store1]", "[dhcp]\n\n[servers.store1]"),), "is required"),
    ((("[servers.store1]", '[dhcp]\nsubnet = "192.0.2.1/24"\n\n[servers.store1]'),),
     "'192.0.2.1/24' is not an IPv4 network"),
    ((SERVER, ('range = ["192.0.2.100", "192.0.2.150"]', 'range = ["192.0.2.100", "192.0.3.150"]')),
     "is not inside dhcp.subnet 192.0.2.0/24"),
    ((SERVER, ('range = ["192.0.2.100", "192.0.2.150"]', 'range = ["192.0.2.200", "192.0.2.150"]')),
     "the first address is above the last"),
    ((PROXY, ('mode = "proxy"', 'mode = "proxy"\nrange = ["192.0.2.100", "192.0.2.150"]')),
     "a proxy-DHCP server hands out no addresses"),
    ((SERVER, ('interface = "br0"', 'interface = "a b"')), "'a b' is not an interface name"),
    ((SERVER, ('interface = "br0"', 'tftp_root = "srv/tftp"')), "must be an absolute path"),
    ((SERVER, ('interface = "br0"', 'unknown = "pxe"')), "'pxe' is not one of 'ignore', 'local-boot'"),
    ((SERVER, ('interface = "br0"', 'leases = 3')), "unknown key 'leases'"),
    ((('export = "root-node1"', 'export = "root-node1"\nip = "192.0.2.10"'),), "add a [dhcp] table"),
    ((PROXY, FIXED), "a proxy-DHCP server ([dhcp] mode = \"proxy\") gives no addresses"),
    ((SERVER, FIXED, ('ip = "192.0.2.10"', 'ip = "192.0.3.10"')),
     "'192.0.3.10' is not a host address of dhcp.subnet"),
    ((SERVER, FIXED, ('ip = "192.0.2.10"', 'ip = "192.0.2.255"')), "is not a host address"),
    ((SERVER, FIXED, ('ip = "192.0.2.10"', 'ip = "192.0.2.300"')), "'192.0.2.300' is not an IPv4 address"),
    ((SERVER, FIXED, ('hostname = "node-1"', 'hostname = "-node"')), "'-node' is not a host name"),
    ((SERVER, FIXED, ('export = "root-node2"', 'export = "root-node2"\nip = "192.0.2.10"')),
     "'192.0.2.10' is already used by machines.node1.ip"),
])  # fmt: skip
def test_bad_dhcp_settings_name_the_key(tmp_path: Path, replacements: tuple[tuple[str, str], ...],
                                         expected: str) -> None:
    found = problems(tmp_path, *replacements)
    assert len(found) == 1 and expected in found[0], found


def test_problem_lines_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as e:
        load(tmp_path, SERVER, FIXED, ('ip = "192.0.2.10"', 'ip = "nope"'))
    assert "machines.node1.ip: 'nope' is not an IPv4 address" in str(e.value)


need_dnsmasq = pytest.mark.skipif(shutil.which("dnsmasq") is None and not Path("/usr/sbin/dnsmasq").exists(),
                                  reason="dnsmasq not found (Debian package dnsmasq-base)")


@need_dnsmasq
@pytest.mark.parametrize("mode", [SERVER, PROXY], ids=["server", "proxy"])
@pytest.mark.parametrize("unknown", ["ignore", "local-boot"])
def test_dnsmasq_accepts_the_configuration(tmp_path: Path, mode: tuple[str, str], unknown: str,
                                           write_inventory: Callable[..., Path]) -> None:
    inv = load(tmp_path, mode, ("[dhcp]", f'[dhcp]\nunknown = "{unknown}"'),
               *([FIXED] if mode is SERVER else []))
    conf = tmp_path / "netbootgen.conf"
    conf.write_text(render_dnsmasq(inv)[CONF].text)
    result = run(["dnsmasq", "--test", f"--conf-file={conf}"], capture=True)
    assert "syntax check OK" in result.stdout + result.stderr


@need_dnsmasq
def test_golden_configuration_passes_dnsmasq() -> None:
    conf = Path(__file__).parent / "data" / "expected" / CONF
    result = run(["dnsmasq", "--test", f"--conf-file={conf}"], capture=True)
    assert "syntax check OK" in result.stdout + result.stderr


def test_with_network_moves_interface_root_and_subnet(tmp_path: Path) -> None:
    inv = load(tmp_path, SERVER)
    assert inv.dhcp is not None
    moved = with_network(inv.dhcp, interface="nbg0", tftp_root="/tmp/x/tftp", subnet="10.9.0.0/24",
                         range_=("10.9.0.100", "10.9.0.120"))
    text = render_dnsmasq_conf(inv, moved)
    assert "interface=nbg0" in text and "tftp-root=/tmp/x/tftp" in text
    assert "dhcp-range=10.9.0.100,10.9.0.120,255.255.255.0,1h" in text and "option:router" not in text


def _namespaces() -> list[str]:
    out = run(["ip", "netns", "list"], capture=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


need_netns = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                                reason="needs root and iproute2 (network namespace)")


@need_dnsmasq
@need_netns
def test_netns_dnsmasq_serves_tftp_and_everything_goes_away(tmp_path: Path) -> None:
    """The rendered configuration runs in boot-test's namespace: busybox's tftp client, in the namespace,
    fetches pxelinux.cfg/default from it; closing removes the namespace, and so does a failure halfway."""
    from netbootgen.emulate.netns import SERVER_IP, NetnsBoot

    inv = load(tmp_path, SERVER)
    tftp = tmp_path / "tftp"
    (tftp / "pxelinux.cfg").mkdir(parents=True)
    (tftp / "pxelinux.cfg" / "default").write_text("DEFAULT local\n")
    before = set(_namespaces())
    with NetnsBoot(inv, inv.machines["node1"], tmp_path / "root.img", tftp, tmp_path) as net:
        assert net.name in _namespaces() and net.bridge == "eth0"  # the export server's interface name
        with net.inside():
            run(["busybox", "tftp", "-g", "-r", "pxelinux.cfg/default", "-l", tmp_path / "got", SERVER_IP])
        assert (tmp_path / "got").read_text() == "DEFAULT local\n"
        conf = (tmp_path / "dnsmasq.conf").read_text()
        assert "interface=eth0" in conf and f"tftp-root={tftp}" in conf and "dhcp-range=10.213.0.100" in conf
    assert set(_namespaces()) == before
    with pytest.raises(InputError, match="--aoe-target must be serve or vblade"):
        NetnsBoot(inv, inv.machines["node1"], tmp_path / "root.img", tftp, tmp_path, target="nbd")
    assert set(_namespaces()) == before  # dnsmasq was running: stopped, and the namespace deleted
