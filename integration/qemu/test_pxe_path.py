"""The PXE path, every branch (issue 11): a MAC without a pxelinux.cfg file, and the known-good entry.

- A MAC no machine has gets PXELINUX's `default`, whose LOCALBOOT hands the machine back to the firmware
  (UEFI: GRUB's grub.cfg, whose entry runs `exit`): `boot-test --mac` reports that local boot as its outcome,
  quickly, not as a timeout.
- An update that breaks the boot (a new kernel, and an initrd without the NIC's driver: a profile whose
  nic_drivers lost virtio_net) leaves the known-good pair beside it: the TFTP tree keeps the old kernel's bytes
  as vmlinuz.prev with the old initrd, `current` fails at aoe-discovered, and `boot-test --entry previous`
  (typed at PXELINUX's boot: prompt) boots the old kernel and initrd to init.

Everything runs through the real CLI, as a user would, with the shell-only initrd of the example (cached by
test_boot.py); the broken initrd is one dracut build.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from netbootgen.inventory import example_text
from netbootgen.kernel.fetch import KernelTree

UNKNOWN_MAC = "52:54:00:99:99:99"
AOE_TIMEOUT = 10  # rd.aoe.timeout: the broken initrd gives up this long after 95aoe starts asking
STAGE_TIMEOUT = 180  # other jobs share the 2 cores
KERNEL_UPDATE = b"netbootgen test: a kernel update (bytes after the signed bzImage are never read)\n"


def netbootgen(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "netbootgen", *map(str, args)], capture_output=True, text=True,
                          timeout=1200, stdin=subprocess.DEVNULL)


def boot_test(work: Path, name: str, *args: str | Path) -> tuple[subprocess.CompletedProcess[str], dict]:
    report = work / f"{name}.json"
    proc = netbootgen("boot-test", *args, "--initrd", "shell", "--stage-timeout", STAGE_TIMEOUT, "--json", report)
    assert report.exists(), proc.stdout + proc.stderr
    return proc, json.loads(report.read_text())


def stage_names(rep: dict) -> list[str]:
    return [s["name"] for s in rep["stages"]]


@pytest.mark.parametrize(("firmware", "fallback", "stages", "line"), [
    ("bios", "pxelinux.cfg/default", ["firmware", "pxelinux", "localboot", "local-disk"],
     "Booting from local disk..."),
    ("uefi", "grub/grub.cfg", ["firmware", "localboot", "next-boot-option"],
     "Booting `back to the firmware: its next boot option'"),
], ids=["bios", "uefi"])
def test_unknown_mac_gets_the_default_entry_and_its_local_boot_is_the_outcome(
        work: Path, firmware: str, fallback: str, stages: list[str], line: str) -> None:
    proc, rep = boot_test(work, "unknown", "--mac", UNKNOWN_MAC, "--firmware", firmware, "--workdir", work / "run")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert rep["ok"] is True and rep["mac"] == UNKNOWN_MAC
    assert rep["outcome"] == f"local boot: the default entry ({fallback})"
    assert stage_names(rep) == stages
    assert all(s["ok"] for s in rep["stages"]), rep["stages"]
    assert line in rep["console_log"]
    assert "Linux version" not in rep["console_log"]  # no per-MAC file, so no kernel
    assert f"outcome: local boot: the default entry ({fallback})" in proc.stdout
    # reported as soon as PXELINUX says so, not after a stage timeout or the firmware's retry
    assert rep["seconds"] < STAGE_TIMEOUT / 3, rep["stages"]


def local_kernel_update(kernel: KernelTree, root: Path) -> Path:
    """An unpacked kernel tree (a profile's kernel_path) whose vmlinuz has other bytes than `kernel`'s: the same
    kernel with bytes appended (after the signature Debian appends, as signing does), its modules linked."""
    (root / "boot").mkdir(parents=True)
    (root / "lib" / "modules").mkdir(parents=True)
    (root / "boot" / kernel.vmlinuz.name).write_bytes(kernel.vmlinuz.read_bytes() + KERNEL_UPDATE)
    (root / "boot" / kernel.config.name).symlink_to(kernel.config)
    (root / "lib" / "modules" / kernel.version).symlink_to(kernel.moddir)
    return root


def test_previous_entry_keeps_its_kernel_and_boots_after_a_broken_update(work: Path, kernel: KernelTree) -> None:
    text = example_text()
    for old in ("kernel_args = []", 'kernel_version = "auto"', 'nic_drivers = { virtio_net = "m" }'):
        assert text.count(old) == 1, old
    new_kernel = local_kernel_update(kernel, work / "kernel-update")
    # the update: a new kernel, and a profile that lost the NIC's driver (its initrd cannot reach the AoE target);
    # rd.aoe.timeout on the command line of both entries, so that the broken initrd gives up soon
    update = work / "update.toml"
    update.write_text(text.replace("kernel_args = []", f'kernel_args = ["rd.aoe.timeout={AOE_TIMEOUT}"]')
                      .replace('kernel_version = "auto"', f'kernel_path = "{new_kernel}"')
                      .replace('nic_drivers = { virtio_net = "m" }', 'nic_drivers = { e1000 = "m" }'))
    run = work / "run"

    # the known-good build (the built-in example: its initrd is the one test_boot.py boots, cached), then the
    # update into the same tree, as two `netbootgen build`s would do
    built = netbootgen("build", "--out", run / "render", "--initrd", "shell")
    assert built.returncode == 0, built.stdout + built.stderr
    boot = run / "render" / "tftp" / "boot" / "virtio"
    good_kernel, good_initrd = (boot / "vmlinuz").read_bytes(), (boot / "initrd.img").read_bytes()
    assert good_kernel == kernel.vmlinuz.read_bytes()

    # boot-test builds the update into the same tree (the good pair moves to previous) and boots `current`
    proc, rep = boot_test(work, "current", update, "--workdir", run)
    assert "kept as vmlinuz.prev and initrd.prev.img" in proc.stderr, proc.stderr
    assert (boot / "vmlinuz").read_bytes() == kernel.vmlinuz.read_bytes() + KERNEL_UPDATE
    assert (boot / "initrd.img").read_bytes() != good_initrd
    assert (boot / "vmlinuz.prev").read_bytes() == good_kernel  # the old kernel's bytes, not the new vmlinuz
    assert (boot / "initrd.prev.img").read_bytes() == good_initrd
    assert proc.returncode == 1, proc.stdout + proc.stderr
    by_name = {s["name"]: s for s in rep["stages"]}
    assert by_name["kernel"]["ok"] and by_name["initrd"]["ok"], rep["stages"]  # the new kernel itself boots
    assert rep["failed_stage"] == "aoe-discovered", rep["stages"]
    assert f"did not appear within {AOE_TIMEOUT} s (rd.aoe.timeout)" in (rep["failure"] or ""), rep["last_lines"]
    assert "BOOT_IMAGE=boot/virtio/vmlinuz root=" in rep["console_log"]

    # the known-good entry, chosen at PXELINUX's prompt over the serial console
    proc, rep = boot_test(work, "previous", update, "--workdir", run, "--entry", "previous")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert rep["entry"] == "previous" and rep["ok"] is True and rep["disk_marker"] is True
    assert stage_names(rep) == ["firmware", "pxelinux", "prompt", "kernel", "initrd", "aoe-discovered",
                                "root-mounted", "init"]
    assert all(s["ok"] for s in rep["stages"]), rep["stages"]
    assert "boot: previous" in rep["console_log"]
    assert ("BOOT_IMAGE=boot/virtio/vmlinuz.prev root=aoe:e0.1:ext4 rw console=ttyS0,115200 "
            f"rd.aoe.timeout={AOE_TIMEOUT} initrd=boot/virtio/initrd.prev.img") in rep["console_log"]
    assert "NETBOOTGEN-INIT-OK" in rep["console_log"]
    # the same update built again leaves both pairs as they were
    assert (boot / "vmlinuz.prev").read_bytes() == good_kernel
    assert (boot / "initrd.prev.img").read_bytes() == good_initrd
