"""dnsmasq/netbootgen.conf: DHCP and TFTP for the inventory's machines, as dnsmasq serves them.

One dhcp-host per machine lists its MACs (several NICs share the machine's fixed address, as dnsmasq allows)
and sets the tag `netbootgen`; the boot file depends on the client's architecture (DHCP option 93): BIOS
clients get pxelinux.0, x86-64 UEFI clients (7, and 9 as some firmware sends) GRUB's core.efi. MACs without a
dhcp-host get no boot file ([dhcp] unknown = "ignore"); with "local-boot" a BIOS client gets pxelinux.0, whose
`default` file boots the local disk, and a UEFI client still no boot file: its PXE boot option fails and the
firmware goes on to its next boot option. (GRUB's grub.cfg, whose entry runs `exit`, would not do: GRUB 2.06's
`exit` returns EFI_SUCCESS, and EDK2-based firmware then shows its boot manager menu instead of the next option.)

In mode "server" dnsmasq hands out the addresses ([dhcp] range, or only the machines' fixed addresses); in
mode "proxy" another DHCP server does, and dnsmasq answers PXE clients with the boot file only (proxy-DHCP:
pxe-service, with the file's full name so that no ".0" layer suffix is added). DNS is off (port=0).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

from netbootgen.inventory import Inventory
from netbootgen.model import Dhcp
from netbootgen.pxe.grub import GRUB_EFI_IMAGE
from netbootgen.render import FileTree, RenderedFile, inventory_header, render_template

CONF = "dnsmasq/netbootgen.conf"  # in the rendered tree
BIOS_BOOT_FILE = "pxelinux.0"  # relative to the TFTP root
TAG = "netbootgen"  # set by the dhcp-host lines
EFI_TAG = "efi-x86_64"
EFI_ARCHES = (7, 9)  # RFC 4578 / IANA processor architecture types: x86-64 UEFI (9 is sent by some firmware)


@dataclass(frozen=True)
class Host:
    comment: str
    line: str  # the value of dhcp-host=


def dhcp_hosts(inv: Inventory) -> list[Host]:
    hosts = []
    for m in inv.machines.values():
        fields = [*m.macs, f"set:{TAG}", *([m.ip] if m.ip else []), *([m.hostname] if m.hostname else [])]
        hosts.append(Host(f"machine {m.name}", ",".join(fields)))
    return hosts


def dhcp_range(dhcp: Dhcp) -> str:
    """The dhcp-range= value: the dynamic range, or the subnet for fixed addresses only, or for proxy-DHCP."""
    net = ipaddress.IPv4Network(dhcp.subnet or "0.0.0.0/0")
    if dhcp.mode == "proxy":
        return f"{net.network_address},proxy,{net.netmask}"
    if dhcp.range is not None:
        return f"{dhcp.range[0]},{dhcp.range[1]},{net.netmask},1h"
    return f"{net.network_address},static,{net.netmask},1h"


def render_dnsmasq_conf(inv: Inventory, dhcp: Dhcp) -> str:
    """The configuration for `dhcp` (the inventory's [dhcp], or one with another interface and TFTP root, as
    boot-test runs it)."""
    only_known = [f"tag:{TAG}"] if dhcp.unknown == "ignore" else []  # BIOS: pxelinux.cfg/default boots locally
    known = [f"tag:{TAG}"]  # UEFI: never GRUB for an unknown MAC (see above)
    return render_template("dnsmasq/netbootgen.conf.j2", {
        "header": inventory_header(inv),
        "dhcp": dhcp,
        "dhcp_range": dhcp_range(dhcp),
        "hosts": dhcp_hosts(inv),
        "efi_tag": EFI_TAG,
        "efi_arches": EFI_ARCHES,
        # pxe-service chooses by architecture itself
        "bios_proxy_tags": "".join(f"{t}," for t in only_known),
        "efi_proxy_tags": "".join(f"{t}," for t in known),
        "bios_tags": ",".join([*only_known, f"tag:!{EFI_TAG}"]),
        "efi_tags": ",".join([*known, f"tag:{EFI_TAG}"]),
        "bios_file": BIOS_BOOT_FILE,
        "efi_file": GRUB_EFI_IMAGE,
    })


def render_dnsmasq(inv: Inventory) -> FileTree:
    """dnsmasq/netbootgen.conf, when the inventory has a [dhcp] table."""
    if inv.dhcp is None:
        return {}
    return {CONF: RenderedFile(render_dnsmasq_conf(inv, inv.dhcp))}


def with_network(dhcp: Dhcp, *, interface: str, tftp_root: str, subnet: str | None = None,
                 range_: tuple[str, str] | None = None) -> Dhcp:
    """`dhcp` served on another interface and TFTP root, and with `subnet`, on another subnet with the dynamic
    range `range_` and no router (boot-test's network namespace)."""
    moved = replace(dhcp, interface=interface, tftp_root=tftp_root)
    if subnet is None:
        return moved
    return replace(moved, subnet=subnet, range=range_ if dhcp.mode == "server" else None, router=None)
