"""Multipath against the real Linux aoe initiator: a guest with two NICs, each on its own unix-dgram transport of
ONE `netbootgen serve`, sees e1.2 over both paths, reads and writes through both; one link is cut in the middle of
a `dd` (QMP `set_link net1 off`: the NIC loses its carrier and frames are lost both ways, as a pulled cable; the
target keeps running, as the other end of a cut cable does), the I/O completes over the other path and every
byte is where it belongs (checksums of what the guest wrote, compared on the host with the image file).

The driver (aoecmd.c) keeps one target per source MAC and hands out frames round-robin over the targets with room
in their window; a frame that gets no answer for HARD_SCORN_SECS (10 s) taints its target and moves to another,
so the `dd` during which the link goes stalls for about 10 s, and later I/O uses the remaining path only.

Figures (the guest's nanosecond clock, requests per transport from the target's counters) are printed (see them
with pytest -s); docs/benchmarks.md has a run.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import time
from pathlib import Path

import pexpect

from netbootgen.aoe.process import ServeProcess
from netbootgen.cache import cache_dir
from netbootgen.emulate.qemu import boot_kernel, dgram_netdev, qemu_argv, qmp_command
from netbootgen.kernel.fetch import KernelTree
from netbootgen.run import spawn_console
from netbootgen.testing.guest import GUEST_MAC, build_initramfs, guest_mac, guest_spec

MIB = 1 << 20
DISK_BYTES = 40 * MIB
# (name, offset MiB, size MiB): A with both links, B the link is cut during it, C with one link left.
REGIONS = (("A", 4, 8), ("B", 14, 16), ("C", 32, 8))
BOOT_TIMEOUT = 120  # to GUEST-CUT-ME (a healthy boot plus the first read and write take ~15 s under TCG)
END_TIMEOUT = 180  # from the cut to the end (the failover itself takes ~10 s)

SCRIPT = r"""
D=/dev/etherd/e1.2
S=/sys/block/etherd!e1.2
ns() { set -- $(grep -m1 '^now at' /proc/timer_list); echo "$3"; }
paths() {  # the driver's targets of e1.2 (debugfs): MAC, taint, frames read and written, interface
    f=/sys/kernel/debug/aoe/e1.2
    i=0  # the file comes a moment after the disk (aoeblk_gdalloc)
    while [ ! -r $f ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    tr '\t' ' ' < $f | sed "s/^/GUEST-PATHS $1 /"
}
mount -t debugfs none /sys/kernel/debug 2>/dev/null
mkdir -p /tmp
wait_dev $D 30 || { echo GUEST-ABSENT; poweroff -f; }
i=0
while :; do
    case "$(cat $S/netif)" in eth0,eth1|eth1,eth0) break;; esac
    [ $i -ge 300 ] && break
    sleep 0.1; i=$((i + 1)); [ $((i % 10)) = 0 ] && echo > /dev/etherd/discover
done
echo "GUEST-NETIF $(cat $S/netif)"
paths both
for r in __REGIONS__; do
    set -- $(echo $r | tr : ' ')
    head -c $(($3 * 1048576)) /dev/urandom > /tmp/$1
    echo "GUEST-SUM $1 $(md5sum < /tmp/$1 | cut -d' ' -f1)"
done
t0=$(ns); s=$(dd if=$D bs=64k iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1); t1=$(ns)
echo "GUEST-READ $s $t0 $t1"
rd() {  # LABEL: time a plain read of the first 8 MiB (no checksum on the one vCPU meanwhile)
    t0=$(ns); dd if=$D of=/dev/null bs=64k count=128 iflag=direct 2>/dev/null; t1=$(ns)
    echo "GUEST-RD $1 $t0 $t1"
}
rd both
write() {  # NAME OFFSET_MIB SIZE_MIB
    t0=$(ns)
    dd if=/tmp/$1 of=$D bs=64k seek=$(($2 * 16)) oflag=direct conv=notrunc 2>/dev/null || echo "GUEST-FAIL dd $1"
    t1=$(ns)
    echo "GUEST-WROTE $1 $t0 $t1"
}
for r in __REGIONS__; do
    set -- $(echo $r | tr : ' ')
    [ $1 = B ] && { echo GUEST-CUT-ME; paths before-cut; }
    write $1 $2 $3
    [ $1 = B ] && paths after-cut
done
rd one
for r in __REGIONS__; do
    set -- $(echo $r | tr : ' ')
    t0=$(ns)
    s=$(dd if=$D bs=64k skip=$(($2 * 16)) count=$(($3 * 16)) iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
    t1=$(ns)
    echo "GUEST-BACK $1 $s $t0 $t1"
done
echo "GUEST-NETIF-END $(cat $S/netif) $(cat $S/state)"
paths end
echo GUEST-END
poweroff -f
"""


def _requests(log: str) -> dict[int, list[int]]:
    """Path number -> its requests= counter, in the order they were logged (on SIGUSR1 and at exit)."""
    found: dict[int, list[int]] = {0: [], 1: []}
    for m in re.finditer(r"/t(\d)\.sock:\S+: dropped=\d+ hot_path=\w+.* requests=(\d+) mac=", log):
        found[int(m.group(1))].append(int(m.group(2)))
    return found


def _guest_paths(out: str, phase: str) -> dict[str, dict[str, str]]:
    """The driver's targets at `phase` (debugfs, aoeblk.c): MAC -> {"taint": ..., "r": ..., "w": ..., "if": ...}."""
    targets: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in out.splitlines():
        if not line.startswith(f"GUEST-PATHS {phase} "):
            continue
        rest = line.removeprefix(f"GUEST-PATHS {phase} ").strip()
        if m := re.fullmatch(r"([0-9a-f]{12}):\d+:\d+:\d+", rest):
            current = targets.setdefault(m.group(1), {})
        elif current is not None and ":" in rest:
            key, _, value = rest.partition(":")
            current[key.strip()] = value.strip()
        elif current is not None:
            current["if"] = rest
    return targets


def test_two_paths_one_cut_in_the_middle_of_a_dd(qemu: Path, kernel: KernelTree, work: Path) -> None:
    disk = work / "disk.img"
    original = os.urandom(DISK_BYTES)
    disk.write_bytes(original)
    regions = " ".join(f"{n}:{off}:{size}" for n, off, size in REGIONS)
    initrd = build_initramfs(kernel.moddir, SCRIPT.replace("__REGIONS__", regions), work / "initrd.gz")
    socks = [(work / f"t{i}.sock", work / f"q{i}.sock") for i in range(2)]
    args = ["--export", f"1.2={disk}", "--mac-allow", GUEST_MAC, "--mac-allow", guest_mac(1)]
    for t, q in socks:
        args += ["--transport", f"unix-dgram:{t}:{q}"]
    qmp = work / "qmp.sock"
    spec = guest_spec(qemu, boot_kernel(kernel.vmlinuz, cache_dir()), initrd, dgram_netdev(socks[0][1], socks[0][0]),
                      more_netdevs=[dgram_netdev(socks[1][1], socks[1][0])], qmp=qmp, memory_mib=384)
    b_off, b_size = REGIONS[1][1] * MIB, REGIONS[1][2] * MIB
    with ServeProcess(args, work / "target.log") as served, (work / "console.log").open("w") as console:
        child = spawn_console(qemu_argv(spec), log=console)
        try:
            child.expect(["GUEST-CUT-ME", "GUEST-ABSENT", "GUEST-FAIL"], timeout=BOOT_TIMEOUT)
            assert child.after == "GUEST-CUT-ME", (work / "console.log").read_text()[-3000:]
            # Cut once the dd of B has begun (its first block is on the disk) and before it is done (its last is
            # not): in the middle of the dd.
            with disk.open("rb") as f:
                deadline = time.monotonic() + 30
                while os.pread(f.fileno(), 4096, b_off) == original[b_off : b_off + 4096]:
                    assert time.monotonic() < deadline, "the dd of B did not begin"
                    time.sleep(0.002)
                qmp_command(qmp, "set_link", {"name": "net1", "up": False})
                last = os.pread(f.fileno(), 4096, b_off + b_size - 4096)
            assert last == original[b_off + b_size - 4096 : b_off + b_size], "the cut came after the dd of B"
            served.signal(signal.SIGUSR1)  # the counters at the cut
            child.expect("GUEST-END", timeout=END_TIMEOUT)
            child.expect(pexpect.EOF, timeout=30)
        finally:
            if child.isalive():
                child.terminate(force=True)
            child.close()
    out = (work / "console.log").read_text(errors="replace").replace("\r", "")
    log = served.output()
    context = f"\n--- console ---\n{out[-8000:]}\n--- target ---\n{log[-3000:]}"
    assert "GUEST-FAIL" not in out, context

    # Both paths: one target per NIC, each answered from its own MAC; the one cut is tainted (avoided).
    assert re.search(r"GUEST-NETIF eth[01],eth[01]\n", out), context
    for phase in ("both", "before-cut", "after-cut", "end"):
        assert sorted(_guest_paths(out, phase)) == ["020000000102", "020001000102"], context
    end = _guest_paths(out, "end")
    assert end["020000000102"]["taint"] == "0" and int(end["020001000102"]["taint"]) > 0, context
    assert (end["020000000102"]["if"], end["020001000102"]["if"]) == ("eth0", "eth1"), context

    # The data: what the guest read and wrote, checked on the host against the image file.
    assert f"GUEST-READ {hashlib.md5(original).hexdigest()}" in out, context
    after = disk.read_bytes()
    expected = bytearray(original)
    for name, off, size in REGIONS:
        m = re.search(rf"GUEST-SUM {name} ([0-9a-f]{{32}})", out)
        assert m, context
        region = after[off * MIB : (off + size) * MIB]
        assert hashlib.md5(region).hexdigest() == m.group(1), f"{name} on the host differs{context}"
        assert re.search(rf"GUEST-BACK {name} {m.group(1)} ", out), f"{name} read back differs{context}"
        expected[off * MIB : (off + size) * MIB] = region
    assert after == bytes(expected), "bytes outside the written regions changed" + context

    # Frames per transport: both carried I/O before the cut; after it, path 1 got (almost) nothing.
    reqs = _requests(log)
    assert len(reqs[0]) == 2 and len(reqs[1]) == 2, context  # on SIGUSR1 at the cut, and at exit
    at_cut = reqs[0][0] + reqs[1][0]
    assert min(reqs[0][0], reqs[1][0]) > at_cut // 10, f"I/O not spread over both paths{context}"
    assert reqs[1][1] - reqs[1][0] < 200, f"path 1 served after the cut{context}"
    assert reqs[0][1] - reqs[0][0] > (DISK_BYTES // 2) // 1024, f"path 0 did not take over{context}"

    # Figures.
    def seconds(line: str) -> float:
        t0, t1 = (int(x) for x in line.split()[-2:])
        return (t1 - t0) / 1e9

    read_line = re.search(r"GUEST-READ .*", out)
    assert read_line
    rows = [f"read {DISK_BYTES // MIB} MiB + md5, both paths: {seconds(read_line.group(0)):.2f} s"]
    for how in ("both", "one"):
        rd = re.search(rf"GUEST-RD {how} .*", out)
        assert rd, context
        rows.append(f"read 8 MiB, {how} path(s): {seconds(rd.group(0)):.2f} s = {8 / seconds(rd.group(0)):.1f} MiB/s")
    for name, _off, size in REGIONS:
        wrote = re.search(rf"GUEST-WROTE {name} .*", out)
        back = re.search(rf"GUEST-BACK {name} .*", out)
        assert wrote and back, context
        how = {"A": "both paths", "B": "link cut during it", "C": "one path"}[name]
        w, r = seconds(wrote.group(0)), seconds(back.group(0))
        rows.append(f"write {name} {size} MiB ({how}): {w:.2f} s = {size / w:.1f} MiB/s; "
                    f"read back + md5 (one path): {r:.2f} s")
    rows.append(f"requests per transport at the cut: path0={reqs[0][0]} path1={reqs[1][0]}; "
                f"at the end: path0={reqs[0][1]} path1={reqs[1][1]}")
    rows += [line for line in out.splitlines() if line.startswith(("GUEST-PATHS", "GUEST-NETIF"))]
    print("\n".join(rows))
