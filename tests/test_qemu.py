"""QEMU argv is data: one pure function builds it from a spec, for boot-test, the KVM probe and the test guest.

The binary is a field of the spec, so none of this needs QEMU installed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from netbootgen.emulate import qemu as q
from netbootgen.emulate.qemu import QemuSpec, dgram_netdev, guest_cpus, optarg, qemu_argv, stream_netdev, tap_netdev
from netbootgen.errors import InputError
from netbootgen.testing.guest import guest_spec

BIN = Path("/opt/qemu/bin/qemu-system-x86_64")


def spec(**kw: object) -> QemuSpec:
    base: dict[str, object] = dict(netdev=dgram_netdev(Path("/w/q.sock"), Path("/w/t.sock")),
                                   mac="52:54:00:12:34:56", bios_log=Path("/w/bios.log"))
    base.update(kw)
    return QemuSpec(BIN, **base)  # type: ignore[arg-type]


def after(argv: list[str], opt: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == opt]


def test_the_binary_comes_from_the_spec() -> None:
    assert qemu_argv(spec())[0] == os.fspath(BIN)


def test_pxe_shares_one_nic_between_slirp_and_the_aoe_socket() -> None:
    argv = qemu_argv(spec(tftp_root=Path("/w/tftp")))
    netdevs = after(argv, "-netdev")
    assert "user,id=slirp0,tftp=/w/tftp,bootfile=pxelinux.0" in netdevs
    assert "dgram,local.type=unix,local.path=/w/q.sock,remote.type=unix,remote.path=/w/t.sock,id=net0" in netdevs
    assert "hubport,id=hp1,hubid=0,netdev=net0" in netdevs
    assert after(argv, "-device")[-1] == "virtio-net-pci,mac=52:54:00:12:34:56,netdev=hp2,bootindex=1"
    assert after(argv, "-boot") == ["order=n"]
    assert "-kernel" not in argv


def test_pxe_without_a_nic_is_refused() -> None:
    with pytest.raises(ValueError, match="netdev"):
        qemu_argv(spec(netdev=None, tftp_root=Path("/w/tftp")))


def test_direct_boot_uses_kernel_initrd_and_append() -> None:
    argv = qemu_argv(spec(kernel=Path("/k/vmlinuz"), initrd=Path("/k/initrd.img"), append="root=aoe:e0.1 rw"))
    assert after(argv, "-kernel") == ["/k/vmlinuz"]
    assert after(argv, "-initrd") == ["/k/initrd.img"]
    assert after(argv, "-append") == ["root=aoe:e0.1 rw"]
    assert "virtio-net-pci,mac=52:54:00:12:34:56,netdev=net0" in after(argv, "-device")
    assert not any(n.startswith("user,") for n in after(argv, "-netdev"))


def test_accel_jumbo_and_debugcon() -> None:
    argv = qemu_argv(spec(accel="kvm", host_mtu=9000, kernel=Path("/k")))
    assert after(argv, "-machine") == ["pc,accel=kvm"]
    assert "host_mtu=9000" in after(argv, "-device")[-1]
    assert "isa-debugcon,iobase=0x402,chardev=bios" in after(argv, "-device")
    assert "-nodefaults" in argv and "-no-reboot" in argv


def test_cpu_is_the_hosts_under_kvm_and_the_baseline_under_tcg() -> None:
    assert after(qemu_argv(spec(accel="kvm", kernel=Path("/k"))), "-cpu") == ["max"]
    assert after(qemu_argv(spec(accel="tcg", kernel=Path("/k"))), "-cpu") == ["qemu64"]
    assert after(qemu_argv(spec(accel="tcg", cpu="max", kernel=Path("/k"))), "-cpu") == ["max"]


def test_guest_named_after_its_machine() -> None:
    assert after(qemu_argv(spec(name="node1", kernel=Path("/k"))), "-name") == ["guest=node1,process=node1"]
    assert after(qemu_argv(spec(name="a,b", kernel=Path("/k"))), "-name") == ["guest=a,,b,process=a,,b"]
    assert "-name" not in qemu_argv(spec(kernel=Path("/k")))


def test_smbios_serial_number() -> None:
    assert after(qemu_argv(spec(serial_number="kiosk1", kernel=Path("/k"))), "-smbios") == ["type=1,serial=kiosk1"]
    assert "-smbios" not in qemu_argv(spec(kernel=Path("/k")))


def test_no_bios_log_no_nic() -> None:
    argv = qemu_argv(QemuSpec(BIN, kernel=Path("/k"), append="panic=-1"))
    assert "-chardev" not in argv and "-netdev" not in argv and "-device" not in argv


def test_commas_in_paths_are_doubled() -> None:
    assert optarg("/a,b/c") == "/a,,b/c"
    argv = qemu_argv(spec(bios_log=Path("/w,x/bios.log"), kernel=Path("/k")))
    assert "file,id=bios,path=/w,,x/bios.log" in after(argv, "-chardev")
    assert stream_netdev(Path("/s,1")) == "stream,server=off,addr.type=unix,addr.path=/s,,1"
    assert tap_netdev("aoet1") == "tap,ifname=aoet1,script=no,downscript=no"


def test_test_guest_is_a_spec_too() -> None:
    g = guest_spec(BIN, Path("/k"), Path("/i.gz"), stream_netdev(Path("/s")), mtu=9000, append="x=1")
    argv = qemu_argv(g)
    assert argv[0] == os.fspath(BIN)
    assert after(argv, "-append") == ["console=ttyS0 quiet panic=-1 x=1"]
    assert after(argv, "-device") == ["virtio-net-pci,mac=52:54:00:12:34:56,host_mtu=9000,romfile=,netdev=net0"]
    assert after(argv, "-machine") == ["pc,accel=tcg"]


def test_a_second_nic_and_a_qmp_socket() -> None:
    """Multipath: the test guest gets eth1 on its own backend (netdev net1, the next MAC), and a QMP socket."""
    g = guest_spec(BIN, Path("/k"), Path("/i.gz"), dgram_netdev(Path("/w/q0"), Path("/w/t0")),
                   more_netdevs=[dgram_netdev(Path("/w/q1"), Path("/w/t1"))], qmp=Path("/w/qmp,1"))
    argv = qemu_argv(g)
    assert after(argv, "-netdev") == [
        "dgram,local.type=unix,local.path=/w/q0,remote.type=unix,remote.path=/w/t0,id=net0",
        "dgram,local.type=unix,local.path=/w/q1,remote.type=unix,remote.path=/w/t1,id=net1",
    ]
    assert after(argv, "-device") == [
        "virtio-net-pci,mac=52:54:00:12:34:56,host_mtu=1500,romfile=,netdev=net0",
        "virtio-net-pci,mac=52:54:00:12:34:57,host_mtu=1500,romfile=,netdev=net1",
    ]
    assert after(argv, "-qmp") == ["unix:/w/qmp,,1,server=on,wait=off"]
    assert "-qmp" not in qemu_argv(spec(kernel=Path("/k")))


def test_kvm_is_refused_where_dev_kvm_is_unusable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(q, "KVM", tmp_path / "kvm")
    with pytest.raises(InputError, match=r"--accel kvm: .*kvm does not exist"):
        q.check_accel("kvm")
    q.check_accel("tcg")  # no /dev/kvm needed
    assert q.probe_kvm(BIN, Path("/k"), tmp_path) is False  # no probe boot without /dev/kvm
    assert not (tmp_path / "kvm-probe.json").exists()


def test_guest_cpus() -> None:
    """One guest alone gets 2 vCPUs where the host has 2 cores (TCG runs each in a thread); asked for, as asked."""
    assert guest_cpus() == min(2, os.cpu_count() or 1)
    assert guest_cpus(1) == 1 and guest_cpus(4) == 4
    argv = qemu_argv(QemuSpec(BIN, cpus=guest_cpus(3)))
    assert argv[argv.index("-smp") + 1] == "3"
