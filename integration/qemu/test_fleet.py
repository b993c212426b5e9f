"""The golden fleet (tests/data/fleet.toml) boots at once via PXE through one AoE target, each guest proving
it got its own export and its own PXELINUX file (netbootgen.emulate.fleetboot).

What QEMU cannot be as written is changed, and nothing else (names, MACs, exports, servers, MTUs stay):
- the `intel` profile (kernel 6.1.0-56-amd64 rebuilt with e1000e and AoE built in: a kernel of one's own)
  cannot be fetched, and QEMU gives the guest one virtio NIC: web1 and db1 boot with the `virtio` profile (the
  fetched kernel), AoE on that NIC (not on their second NIC / enp3s0);
- boot-test follows the first serial port, which the kernel writes to only when asked, and not under `quiet`:
  kiosk2 (no console) and web1 (ttyS1) get the default ttyS0, db1 loses `quiet`;
- the busybox root is ext4: db1's xfs root becomes ext4.
kiosk1 boots exactly as written. db1 keeps its 9000-byte MTU (server store2), the kiosks share the read-only
window (offset 2048, length 4194304 sectors) of base-ro, and one target serves the three exports of two servers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from netbootgen.emulate.fleetboot import Evidence, prove

FLEET = Path(__file__).resolve().parents[2] / "tests" / "data" / "fleet.toml"
EMULATED = [  # (text in fleet.toml, what it becomes)
    ('profile = "intel"\nserial_console = "ttyS1,57600"\naoe_interfaces = ["52:54:00:00:01:02"]\n', ""),
    ('profile = "intel"\nmtu = 9000\nfstype = "xfs"\nkernel_args = ["quiet", "elevator=none"]\n'
     'aoe_interfaces = ["enp3s0"]\n', 'mtu = 9000\nkernel_args = ["elevator=none"]\n'),
    ('export = "base-ro"\nserial_console = ""\n', 'export = "base-ro"\n'),
]
MACHINES = ["db1", "kiosk1", "kiosk2", "web1"]  # the inventory's order
PXE_FILES = {"web1": "01-52-54-00-00-01-01", "db1": "01-52-54-00-00-02-01", "kiosk1": "01-52-54-00-00-03-01",
             "kiosk2": "01-52-54-00-00-03-02"}
STAGES = ["firmware", "pxelinux", "kernel", "initrd", "aoe-discovered", "root-mounted", "init"]


def emulated_fleet(path: Path) -> Path:
    text = FLEET.read_text()
    for old, new in EMULATED:
        assert text.count(old) == 1, old  # the golden fleet changed: update EMULATED
        text = text.replace(old, new)
    path.write_text(text)
    return path


def test_golden_fleet_boots_at_once_each_guest_with_its_own_export_and_pxelinux_file(tmp_path: Path,
                                                                                     work: Path) -> None:
    inv = emulated_fleet(tmp_path / "fleet.toml")
    report = tmp_path / "fleet.json"
    argv = [sys.executable, "-m", "netbootgen", "-v", "boot-test", str(inv), "--all", "--jobs", "4",
            "--json", str(report), "--workdir", str(work), "--timeline", str(tmp_path / "fleet.svg"),
            "--stage-timeout", "240"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1500, stdin=subprocess.DEVNULL)
    out = proc.stdout + proc.stderr
    assert report.exists(), out
    rep = json.loads(report.read_text())
    assert proc.returncode == 0, out
    assert rep["ok"] is True and rep["fleet"] is True and rep["jobs"] == 4 and rep["via"] == "pxe"
    runs = {m["machine"]: m for m in rep["machines"]}
    assert list(runs) == MACHINES
    for name, m in runs.items():
        assert [s["name"] for s in m["stages"]] == STAGES and all(s["ok"] for s in m["stages"]), name
        proof = m["proof"]
        assert proof["problems"] == [] and proof["console_machine"] == name, name
        assert proof["console_root"] == m["export"]
        assert proof["cmdline"] == proof["expected_cmdline"], name
        assert proof["expected_from"] == f"the current entry of pxelinux.cfg/{PXE_FILES[name]}"
    # its own PXELINUX file: each machine's APPEND, with the kernel and initrd PXELINUX loaded
    assert runs["kiosk1"]["proof"]["cmdline"] == "BOOT_IMAGE=boot/virtio/vmlinuz root=aoe:e1.0:ext4 ro " \
        "console=ttyS0,115200 panic=30 initrd=boot/virtio/initrd.img"
    assert "root=aoe:e0.2:ext4 rw rd.aoe.mtu=9000" in runs["db1"]["proof"]["cmdline"]
    # its own export: web1 and db1 wrote their names into their own images; the kiosks' is read-only
    assert runs["web1"]["proof"]["image_machine"] == "web1" and runs["db1"]["proof"]["image_machine"] == "db1"
    assert runs["kiosk1"]["disk_marker"] is None and runs["kiosk1"]["readonly"] is True
    assert "Read-only file system" in runs["kiosk2"]["console_log"]
    # at once: every guest started before any ended; the kiosks booted from base-ro together
    ends = [m["started"] + m["seconds"] for m in runs.values()]
    assert max(m["started"] for m in runs.values()) < min(ends)
    # one target process for all; each QEMU named after its machine, on the target's stream socket
    commands = [line[2:] for line in proc.stderr.splitlines() if line.startswith("+ ")]
    targets = [c for c in commands if " -m netbootgen.aoe " in c]
    assert len(targets) == 1 and targets[0].count("--export") == 3, targets
    for name in MACHINES:
        qemu = [c for c in commands if "qemu-system-x86_64" in c and f"-name guest={name},process={name}" in c]
        assert len(qemu) == 1 and "-netdev stream," in qemu[0] and f"type=1,serial={name}" in qemu[0], name
    target_log = (work / "target.log").read_text()
    assert "client 4 connected" in target_log and "client 5 connected" not in target_log
    # one line per machine
    for name in MACHINES:
        assert any(line.split()[:2] == [name, "ok"] for line in proc.stdout.splitlines()), proc.stdout
    assert (tmp_path / "fleet.svg").read_text().count("kiosk") >= 2

    # A guest that had booted another machine's export or file would have been caught: the same evidence with
    # the consoles and images of web1 and db1 swapped.
    names = {"root-web1": "db1", "root-db1": "web1"}
    for name, other in (("web1", "db1"), ("db1", "web1")):
        m = runs[name]
        ev = Evidence(name, m["export"], False, runs[other]["console_log"], m["proof"]["expected_cmdline"],
                      m["proof"]["expected_from"])
        problems = prove(ev, names)
        assert any("the guest says it is machine" in p for p in problems), problems
        assert any("mounted the root image of export" in p for p in problems), problems
        assert any(p.startswith("/proc/cmdline") for p in problems), problems
        assert any(f"holds '{other}' machine name" in p for p in problems), problems
