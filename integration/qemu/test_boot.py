"""End to end: the real netbootgen CLI boots the built-in example (and a broken variant) under QEMU."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from netbootgen.inventory import example_text

ALL_STAGES = ["firmware", "pxelinux", "kernel", "initrd", "aoe-discovered", "root-mounted", "init"]


def boot_test(
    tmp_path: Path, *args: str, inventory: Path | None = None, show_commands: bool = False
) -> tuple[subprocess.CompletedProcess[str], dict]:
    report = tmp_path / "report.json"
    argv = [sys.executable, "-m", "netbootgen", *(["-v"] if show_commands else []), "boot-test",
            *([str(inventory)] if inventory else []),
            "--json", str(report), "--workdir", str(tmp_path / "work"), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert report.exists(), proc.stdout + proc.stderr
    return proc, json.loads(report.read_text())


@pytest.mark.parametrize(
    ("via", "flavour", "dracut"),
    [("pxe", "systemd", "system"), ("direct", "systemd", "system"), ("direct", "shell", "system"),
     ("pxe", "shell", "system"),
     # dracut-ng 106 (Debian 13's): each boot path and each initrd flavour once, to keep CI short
     ("pxe", "systemd", "ng"), ("direct", "shell", "ng")],
)
def test_boot_reaches_every_stage(tmp_path: Path, via: str, flavour: str, dracut: str) -> None:
    proc, rep = boot_test(tmp_path, "--via", via, "--initrd", flavour, "--dracut", dracut, "--stage-timeout", "120")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    expected = ALL_STAGES if via == "pxe" else [s for s in ALL_STAGES if s != "pxelinux"]
    assert [s["name"] for s in rep["stages"]] == expected
    assert all(s["ok"] for s in rep["stages"]), rep["stages"]
    times = [s["t"] for s in rep["stages"]]
    assert times == sorted(times)  # stages arrive in boot order
    assert rep["ok"] is True and rep["machine"] == "node1" and rep["via"] == via
    assert rep["disk_marker"] is True  # the guest's write reached the image through the AoE target
    assert rep["initrd"]["systemd"] is (flavour == "systemd")
    assert rep["initrd"]["dracut"] == dracut
    if flavour == "systemd":  # the initrd's os-release tells the dracut that built it
        greeting = r"Welcome to \S*dracut\S*!" if dracut == "ng" else r"Welcome to .*dracut-059.*\(Initramfs\)"
        assert re.search(greeting, rep["console_log"]), rep["console_log"][:3000]
    assert "NETBOOTGEN-INIT-OK" in rep["console_log"]
    assert "all stages reached" in proc.stdout
    if via == "direct":  # QEMU boots the bzImage's ELF through its PVH entry: no decompressor under TCG
        assert "(the bzImage's ELF, PVH entry)" in out
        # and the initrd with its archives uncompressed: the kernel frees more than the built (zstd) file's size
        assert "(its archives uncompressed)" in out
    freed = int(re.search(r"Freeing initrd memory: (\d+)K", rep["console_log"]).group(1)) * 1024
    assert (freed > 2 * rep["initrd"]["size"]) is (via == "direct"), (freed, rep["initrd"]["size"])
    cpus = min(2, os.cpu_count() or 1)  # a guest booted alone gets 2 vCPUs on a host with 2 cores
    assert f"smp: Brought up 1 node, {cpus} CPU" in rep["console_log"]
    if via == "pxe":
        assert "PXELINUX" in rep["console_log"]
        # the per-MAC file's arguments, not a default, reached the kernel
        assert "Command line: BOOT_IMAGE=boot/virtio/vmlinuz root=aoe:e0.1:ext4 rw console=ttyS0,115200 " \
            "initrd=boot/virtio/initrd.img" in rep["console_log"]
    target_log = (tmp_path / "work" / "target.log").read_text()
    assert "bytes_written=" in target_log and "stopped" in target_log


def test_boot_failure_is_reported(tmp_path: Path) -> None:
    """AoE confined to an interface the guest does not have: discovery never happens, and boot-test says so."""
    inv = tmp_path / "broken.toml"
    inv.write_text(example_text().replace('kernel_args = []', 'kernel_args = []\naoe_interfaces = ["eth9"]'))
    proc, rep = boot_test(tmp_path, "--via", "direct", "--stage-timeout", "25", inventory=inv, show_commands=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    # -v shows each command as it starts: the target, then QEMU with the machine's MAC and kernel arguments
    commands = [line[2:] for line in proc.stderr.splitlines() if line.startswith("+ ")]
    assert any(" -m netbootgen.aoe --export 0.1=" in c for c in commands), proc.stderr
    assert any("qemu-system-x86_64 -machine pc,accel=" in c and "mac=52:54:00:12:34:56" in c
               and "rd.aoe.iflist=eth9" in c for c in commands), proc.stderr
    assert rep["ok"] is False
    by_name = {s["name"]: s for s in rep["stages"]}
    assert by_name["initrd"]["ok"] is True
    assert by_name["aoe-discovered"]["ok"] is False and by_name["aoe-discovered"]["t"] is None
    assert by_name["init"]["ok"] is False
    assert "stage aoe-discovered not reached within 25 s" in proc.stderr
    assert "last console lines" in proc.stderr


def test_jumbo_frame_machine_boots_with_8704_byte_frames(tmp_path: Path) -> None:
    """mtu = 9000 on the machine: rd.aoe.mtu=9000 reaches the kernel, the NIC and the target run at 9000, and
    the driver settles on 17-sector frames."""
    inv = tmp_path / "jumbo.toml"
    text = example_text().replace("mtu = 1500", "mtu = 9000")
    inv.write_text(text.replace("kernel_args = []", "kernel_args = []\nmtu = 9000"))
    proc, rep = boot_test(tmp_path, "--via", "pxe", "--stage-timeout", "120", inventory=inv)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(s["ok"] for s in rep["stages"])
    assert " rd.aoe.mtu=9000 " in rep["console_log"]
    assert "e0.1: setting 8704 byte data frames" in rep["console_log"]
