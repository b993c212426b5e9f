"""Boots on a real network, no slirp (boot-test --network netns, root): a bridge in a network namespace, the real
dnsmasq with the rendered dnsmasq/netbootgen.conf, the AoE target on the bridge, the guest on a tap.

  BIOS (SeaBIOS + iPXE -> pxelinux.0 -> pxelinux.cfg/01-MAC) with `netbootgen serve` over AF_PACKET;
  UEFI (OVMF + iPXE's EFI driver -> GRUB's core.efi -> grub/grub.cfg-01-MAC) with vblade run with the rendered
  unit's command;
  proxy-DHCP: dnsmasq gives only the boot file, a second dnsmasq (another namespace) only the address;
  a MAC with no dhcp-host line: no boot file (unknown = "ignore"), or PXELINUX's `default`, which boots the local
  disk (unknown = "local-boot");
  a boot that fails: no process of the run left, both namespaces deleted.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from netbootgen.build import build
from netbootgen.cache import cache_dir
from netbootgen.emulate.console import Stage, follow
from netbootgen.emulate.netns import NetnsBoot
from netbootgen.emulate.qemu import QEMU, QemuSpec, qemu_argv
from netbootgen.emulate.rootfs import make_rootfs
from netbootgen.inventory import example_text, parse_inventory

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("dnsmasq") is None
                                or not Path("/usr/share/OVMF/OVMF_CODE.fd").exists(),
                                reason="needs root, dnsmasq (dnsmasq-base) and OVMF (ovmf)")

STAGES = ["firmware", "pxelinux", "kernel", "initrd", "aoe-discovered", "root-mounted", "init"]
DHCP = '\n[dhcp]\nsubnet = "192.0.2.0/24"\nrange = ["192.0.2.100", "192.0.2.199"]\n'
MAC = "52:54:00:12:34:56"


def boot_test(tmp_path: Path, *args: str, dhcp: str = DHCP) -> tuple[subprocess.CompletedProcess[str], dict]:
    inv = tmp_path / "inv.toml"
    inv.write_text(example_text() + dhcp)
    report = tmp_path / "report.json"
    argv = [sys.executable, "-m", "netbootgen", "-v", "boot-test", str(inv), "--network", "netns", "--accel",
            "tcg", "--stage-timeout", "150", "--json", str(report), "--workdir", str(tmp_path / "work"), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert report.exists(), proc.stdout + proc.stderr
    rep = json.loads(report.read_text())
    assert proc.returncode == 0 and rep["ok"], proc.stdout + proc.stderr
    assert rep["disk_marker"] is True
    assert not [n for n in namespaces() if n.startswith("nbg-")], "a namespace was left behind"
    return proc, rep


def namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def stage_times(rep: dict) -> dict[str, float]:
    return {s["name"]: s["t"] for s in rep["stages"]}


def commands(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line[2:] for line in proc.stderr.splitlines() if line.startswith("+ ")]


def test_bios_netns_dnsmasq_and_serve(tmp_path: Path) -> None:
    proc, rep = boot_test(tmp_path)
    assert list(stage_times(rep)) == STAGES
    work = tmp_path / "work"
    log = (work / "dnsmasq.log").read_text()
    assert re.search(rf"DHCPACK\(eth0\) 192\.0\.2\.\d+ {MAC}", log) is None  # the namespace's subnet is used
    assert re.search(rf"DHCPACK\(eth0\) 10\.213\.0\.\d+ {MAC}", log), log
    assert "option: 67 bootfile-name  pxelinux.0" in log
    assert f"sent {work}/render/tftp/pxelinux.cfg/01-{MAC.replace(':', '-')}" in log
    assert not any("slirp" in c or "user,id=" in c for c in commands(proc))
    assert any(" -m netbootgen.aoe " in c and "--transport iface:eth0" in c for c in commands(proc)), proc.stderr
    assert "bytes_written=" in (work / "target.log").read_text()
    print("netns BIOS + serve stage times:", stage_times(rep))


def test_uefi_netns_dnsmasq_and_rendered_vblade_unit(tmp_path: Path) -> None:
    proc, rep = boot_test(tmp_path, "--firmware", "uefi", "--aoe-target", "vblade")
    assert list(stage_times(rep)) == ["firmware", "grub", *STAGES[2:]]
    work = tmp_path / "work"
    log = (work / "dnsmasq.log").read_text()
    assert "option: 67 bootfile-name  grub/x86_64-efi/core.efi" in log
    assert f"sent {work}/render/tftp/grub/grub.cfg-01-{MAC.replace(':', '-')}" in log
    assert f"sent {work}/render/tftp/grub/grub.cfg " not in log  # the per-MAC file was found first
    assert "Command line: BOOT_IMAGE=/boot/virtio/vmlinuz root=aoe:e0.1:ext4 rw" in rep["console_log"]
    # vblade ran exactly the rendered unit's ExecStart, on the run's image instead of the inventory's path
    unit = (work / "render/export/netbootgen-aoe-root-node1.service").read_text()
    exec_start = shlex.split(re.search(r"^ExecStart=(.*)$", unit, re.M).group(1))
    assert exec_start[-1] == "/srv/aoe/node1.img"
    expected = shlex.join([*exec_start[:-1], str(work / "root.img")])
    assert expected in commands(proc), proc.stderr
    assert not (work / "target.log").exists()  # no netbootgen serve
    assert "e0.1" in (work / "vblade.log").read_text()
    print("netns UEFI + vblade stage times:", stage_times(rep))


def test_proxy_dhcp_next_to_an_address_only_server(tmp_path: Path) -> None:
    proc, rep = boot_test(tmp_path, dhcp=DHCP.replace("[dhcp]", '[dhcp]\nmode = "proxy"').replace(
        'range = ["192.0.2.100", "192.0.2.199"]\n', ""))
    assert list(stage_times(rep)) == STAGES
    work = tmp_path / "work"
    proxy, other = (work / "dnsmasq.log").read_text(), (work / "dhcp-only.log").read_text()
    assert "proxy on subnet 10.213.0.0" in proxy and f"PXE(eth0) {MAC} proxy" in proxy
    assert "DHCPACK" not in proxy  # the address came from the other server
    assert re.search(rf"DHCPACK\(eth0\) 10\.213\.0\.\d+ {MAC}", other), other
    assert "option: 67 bootfile-name" not in other  # no boot file from the addresses-only server
    print("netns BIOS proxy-DHCP stage times:", stage_times(rep))


@pytest.mark.parametrize("unknown", ["ignore", "local-boot"])
def test_mac_without_dhcp_host(tmp_path: Path, unknown: str) -> None:
    """A guest whose MAC is in no dhcp-host line: with unknown = "ignore" it gets an address but no boot file
    (iPXE has nothing to boot); with "local-boot" it gets pxelinux.0, whose `default` file boots the local disk.
    Either way SeaBIOS ends with no bootable device, and no kernel starts."""
    inv = parse_inventory(tomllib.loads(example_text() + DHCP + f'unknown = "{unknown}"\n'), "t")
    work = tmp_path / "work"
    work.mkdir()
    built = build(inv, work / "render", cache_dir(), profiles=["virtio"])
    stranger = "52:54:00:99:99:99"
    # iPXE writes to the screen only, and PXELINUX's `default` sets no SERIAL: what they fetched is in
    # dnsmasq's log
    stages = [Stage("firmware", re.compile(r"Booting from ROM"), source="bios"),
              Stage("no-bootable-device", re.compile(r"No bootable device"), source="bios")]
    m = inv.machines["node1"]
    with NetnsBoot(inv, m, make_rootfs(work / "root.img"), built.tftp, work) as net, net.inside():
        spec = QemuSpec(Path(shutil.which(QEMU) or QEMU), netdev=net.netdev, mac=stranger, boot_nic=True,
                        bios_log=work / "bios.log")
        report = follow(qemu_argv(spec), stages, log_path=work / "console.log", bios_log=work / "bios.log",
                        stage_timeout=120, exit_timeout=0.5)
    assert all(s.ok for s in report.stages), report.last_lines()
    assert "Linux version" not in report.console
    log = (work / "dnsmasq.log").read_text()
    assert not re.search(r"tags: .*netbootgen", log)  # no dhcp-host matched
    assert re.search(rf"DHCPACK\(eth0\) 10\.213\.0\.\d+ {stranger}", log), log
    if unknown == "ignore":
        assert "option: 67 bootfile-name" not in log and "PXELINUX" not in report.console
        print("unknown MAC, unknown = ignore: an address and no boot file")
    else:
        assert f"sent {work}/render/tftp/pxelinux.0 " in log
        assert f"file {work}/render/tftp/pxelinux.cfg/01-52-54-00-99-99-99 not found" in log
        assert f"sent {work}/render/tftp/pxelinux.cfg/default" in log
        print("unknown MAC, unknown = local-boot: pxelinux.cfg/default, LOCALBOOT")


def test_uefi_mac_without_dhcp_host_goes_on_to_the_next_boot_option(tmp_path: Path) -> None:
    """unknown = "local-boot", OVMF's own UEFI PXE (no iPXE option ROM on the NIC, as on most hardware), a MAC in
    no dhcp-host line: dnsmasq gives the UEFI client an address and no boot file, so its PXE boot option fails and
    the firmware goes on to its next boot option (here PXE over IPv6), not into its setup menu. GRUB's core.efi with
    grub/grub.cfg would not do: GRUB 2.06's `exit` returns EFI_SUCCESS, and EDK2's boot manager then shows its
    menu (UiApp); iPXE's EFI driver, which QEMU's NIC carries by default, hides that (its LoadFile fails anyway)."""
    from netbootgen.emulate.firmware import uefi_vars

    inv = parse_inventory(tomllib.loads(example_text() + DHCP + 'unknown = "local-boot"\n'), "t")
    work = tmp_path / "work"
    work.mkdir()
    built = build(inv, work / "render", cache_dir(), profiles=["virtio"])
    stranger = "52:54:00:99:99:98"
    stages = [Stage("pxe4", re.compile(r">>Start PXE over IPv4")),
              Stage("pxe4-failed", re.compile(r'BdsDxe: failed to load Boot[0-9A-F]{4} "UEFI PXEv4')),
              Stage("next-boot-option", re.compile(r'>>Start PXE over IPv6|BdsDxe: loading Boot[0-9A-F]{4} "'))]
    with NetnsBoot(inv, inv.machines["node1"], make_rootfs(work / "root.img"), built.tftp, work) as net, \
            net.inside():
        spec = QemuSpec(Path(shutil.which(QEMU) or QEMU), netdev=net.netdev, mac=stranger, boot_nic=True,
                        nic_rom=False, firmware="uefi", uefi_vars=uefi_vars(work), bios_log=work / "bios.log")
        report = follow(qemu_argv(spec), stages, log_path=work / "console.log", bios_log=work / "bios.log",
                        stage_timeout=120, exit_timeout=0.5)
    assert all(s.ok for s in report.stages), report.last_lines()
    assert "UiApp" not in report.console and "GRUB" not in report.console
    log = (work / "dnsmasq.log").read_text()
    # an offer with an address and no boot file, which UEFI PXE does not take ("No valid offer received")
    assert re.search(rf"DHCPOFFER\(eth0\) 10\.213\.0\.\d+ {stranger}", log), log
    assert "tags: efi-x86_64, eth0" in log  # a UEFI client, known to no dhcp-host
    assert "option: 67 bootfile-name" not in log and "sent /" not in log  # no boot file, nothing over TFTP
    assert "PXE-E16: No valid offer received." in report.console


def processes_naming(text: str) -> list[str]:
    """Command lines of the running processes that name `text` (the run's work folder: dnsmasq's configuration,
    vblade's and the AoE target's image, QEMU's logs)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not a process
            continue
        if proc.name.isdigit() and int(proc.name) != os.getpid() and any(text.encode() in a for a in argv):
            found.append(b" ".join(argv).decode(errors="replace"))
    return found


def test_a_failed_boot_leaves_nothing_behind(tmp_path: Path) -> None:
    """A boot that fails (a stage timeout of 1 s: iPXE needs several seconds for DHCP) with everything the netns
    network can start: the proxy dnsmasq, the addresses-only dnsmasq in the second namespace, the
    router-advertisement dnsmasq, vblade and QEMU. boot-test reports the failure, and afterwards no process of
    the run is left and both namespaces are gone."""
    inv = tmp_path / "inv.toml"
    inv.write_text(example_text() + DHCP)
    report, work = tmp_path / "report.json", tmp_path / "work"
    before = set(namespaces())
    argv = [sys.executable, "-m", "netbootgen", "-v", "boot-test", str(inv), "--network", "netns", "--dhcp-mode",
            "proxy", "--aoe-target", "vblade", "--accel", "tcg", "--stage-timeout", "1", "--json", str(report),
            "--workdir", str(work)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    rep = json.loads(report.read_text())
    assert rep["ok"] is False and rep["failed_stage"] in ("firmware", "pxelinux"), rep["stages"]
    assert "not reached within 1 s" in rep["failure"]
    # everything had started: all three dnsmasq were ready, vblade and QEMU ran
    assert "proxy on subnet 10.213.0.0" in (work / "dnsmasq.log").read_text()
    assert "DHCP, IP range" in (work / "dhcp-only.log").read_text()
    assert "router advertisement on" in (work / "router.log").read_text()
    assert (work / "vblade.log").exists() and (work / "console.log").exists()
    assert any(c.startswith("qemu-system-x86_64 ") or "/qemu-system-x86_64 " in c for c in commands(proc)), out
    assert processes_naming(str(work)) == []
    assert set(namespaces()) == before  # the boot's namespace and its peer deleted (bridge, tap, veths with them)
