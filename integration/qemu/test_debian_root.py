"""A real Debian root (netbootgen image build) booted from the AoE target to multi-user.target and back through
`systemctl poweroff`; the host then proves, without mounting, that the file system is clean and the check unit's
files are there. One image per fstype is built (cached by its inputs) and shared: each boot gets a copy or a
copy-on-write overlay, so tests do not disturb each other."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from netbootgen.cache import cache_dir
from netbootgen.image.build import build_image, copy_image
from netbootgen.inventory import example_text, load_inventory

REAL_STAGES = ["kernel", "initrd", "aoe-discovered", "root-mounted", "switch-root", "systemd", "multi-user",
               "check", "shutdown"]
# TCG boots of a systemd root take 40-90 s here while other jobs run; each stage may take this long
STAGE_TIMEOUT = "240"
BROKEN_STAGE_TIMEOUT = "120"

# Taken down when the unit is stopped, early in the shutdown: long before systemd-shutdown remounts the root
BREAK_UNIT = """[Unit]
Description=netbootgen test: take the NIC down before the root is unmounted

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
ExecStop=/bin/sh -c 'for d in /sys/class/net/*; do [ "$${d##*/}" = lo ] || ip link set "$${d##*/}" down; done'

[Install]
WantedBy=multi-user.target
"""


def boot_test(
    tmp_path: Path, *args: str, inventory: Path | None = None
) -> tuple[subprocess.CompletedProcess[str], dict]:
    report = tmp_path / "report.json"
    argv = [sys.executable, "-m", "netbootgen", "boot-test", *([str(inventory)] if inventory else []),
            "--json", str(report), "--workdir", str(tmp_path / "work"), "--stage-timeout", STAGE_TIMEOUT, *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
    assert report.exists(), proc.stdout + proc.stderr
    return proc, json.loads(report.read_text())


def stage_names(rep: dict) -> list[str]:
    return [s["name"] for s in rep["stages"]]


def assert_clean_boot(proc: subprocess.CompletedProcess[str], rep: dict, boots: int = 1) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert stage_names(rep)[-len(REAL_STAGES):] == REAL_STAGES
    assert all(s["ok"] for s in rep["stages"]), rep["stages"]
    times = [s["t"] for s in rep["stages"]]
    assert times == sorted(times)
    assert rep["root_check"]["clean"] is True, rep["root_check"]
    assert rep["root_check"]["boots"] == boots and rep["root_check"]["data_ok"] is True
    console = rep["console_log"]
    assert "systemd-shutdown[1]: Powering off." in console  # systemd's own poweroff, not poweroff -f
    assert f"NETBOOTGEN-CHECK-OK boot={boots} previous={boots - 1}" in console
    # no agetty on the serial line in a check boot: its hangup used to discard the check unit's queued lines
    assert "node1 login:" not in console


@pytest.fixture(scope="session")
def debian_ext4() -> Path:
    """The example machine's Debian image (built once, then from the cache)."""
    return build_image(load_inventory(None), None, cache_dir(), progress=print).path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@pytest.mark.parametrize(("via", "dracut"), [("direct", "system"), ("pxe", "system"), ("direct", "ng")])
def test_debian_root_to_multi_user_and_clean_poweroff(tmp_path: Path, via: str, dracut: str) -> None:
    proc, rep = boot_test(tmp_path, "--root", "debian", "--via", via, "--dracut", dracut)
    assert_clean_boot(proc, rep)
    assert rep["initrd"]["dracut"] == dracut
    assert ("pxelinux" in stage_names(rep)) is (via == "pxe")
    assert " netbootgen.check" in rep["console_log"]  # the check unit runs only when asked
    # the image masks the generators that probe for local disks: gpt-auto asked the AoE disk for ioctls
    assert "aoe: unknown ioctl" not in rep["console_log"]
    assert "clean fs" in proc.stdout and "all stages reached" in proc.stdout


def test_xfs_debian_root(tmp_path: Path) -> None:
    inv = tmp_path / "xfs.toml"
    inv.write_text(example_text().replace("kernel_args = []", 'kernel_args = []\nfstype = "xfs"'))
    proc, rep = boot_test(tmp_path, "--root", "debian", "--via", "direct", inventory=inv)
    assert_clean_boot(proc, rep)
    assert "root=aoe:e0.1:xfs" in rep["console_log"]
    assert "XFS (etherd/e0.1): Mounting V5 Filesystem" in rep["console_log"]
    assert rep["root_check"]["fs"].startswith("xfs_repair -n: no problems")


def test_second_boot_sees_the_first_and_a_user_image_is_left_alone(tmp_path: Path, debian_ext4: Path) -> None:
    """Boot 1 writes to the user's image (--persist); boot 2, copy-on-write, finds boot 1's files and leaves
    the image byte for byte as it was."""
    image = copy_image(debian_ext4, tmp_path / "mine.img")
    proc, rep = boot_test(tmp_path / "1", "--root-image", str(image), "--persist", "--via", "direct")
    assert_clean_boot(proc, rep, boots=1)
    before = sha256(image)
    proc, rep = boot_test(tmp_path / "2", "--root-image", str(image), "--via", "direct")
    assert_clean_boot(proc, rep, boots=2)  # the guest read boot 1's counter; the host read boot 2's files
    assert sha256(image) == before  # never written without --persist
    assert (tmp_path / "2/work/root.cow").exists()


def test_broken_shutdown_is_caught(tmp_path: Path, debian_ext4: Path) -> None:
    """A unit takes the NIC down when the shutdown begins: the root cannot be remounted read-only over AoE, so
    its journal stays open, and the host-side check says so (with aoe_deadsecs short, the driver fails the I/O
    and the shutdown goes on instead of hanging)."""
    image = copy_image(debian_ext4, tmp_path / "broken.img")
    unit = tmp_path / "netbootgen-break.service"
    unit.write_text(BREAK_UNIT)
    cmds = tmp_path / "debugfs.cmds"
    cmds.write_text(f"cd /etc/systemd/system\nwrite {unit} netbootgen-break.service\ncd multi-user.target.wants\n"
                    "symlink netbootgen-break.service /etc/systemd/system/netbootgen-break.service\n")
    subprocess.run(["debugfs", "-w", "-f", str(cmds), str(image)], check=True, capture_output=True)
    inv = tmp_path / "dead.toml"
    inv.write_text(example_text().replace("kernel_args = []", 'kernel_args = ["aoe.aoe_deadsecs=20"]'))
    # the stages' own time limit: once the root is gone systemd cannot start systemd-shutdown and freezes
    proc, rep = boot_test(tmp_path, "--root-image", str(image), "--persist", "--via", "direct", "--stage-timeout",
                          BROKEN_STAGE_TIMEOUT, inventory=inv)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert rep["ok"] is False
    by_name = {s["name"]: s for s in rep["stages"]}
    assert by_name["check"]["ok"] is True, (rep["failure"], rep["last_lines"])  # the boot itself was fine
    assert by_name["shutdown"]["ok"] is False  # "Failed to execute shutdown binary": the root was gone
    assert rep["root_check"]["clean"] is False, rep["root_check"]
    assert "needs_recovery" in rep["root_check"]["fs"]
    assert "NOT CLEAN" in proc.stdout
