"""QEMU argv is data: built by a pure function from a spec."""

from __future__ import annotations

from pathlib import Path

from netbootgen.emulate.qemu import QemuSpec, optarg, qemu_argv


def spec(**kw: object) -> QemuSpec:
    base = dict(mac="52:54:00:12:34:56", qemu_sock=Path("/w/q.sock"), target_sock=Path("/w/t.sock"),
                bios_log=Path("/w/bios.log"))
    base.update(kw)
    return QemuSpec(**base)  # type: ignore[arg-type]


def after(argv: list[str], opt: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == opt]


def test_pxe_shares_one_nic_between_slirp_and_the_aoe_socket() -> None:
    argv = qemu_argv(spec(tftp_root=Path("/w/tftp")))
    netdevs = after(argv, "-netdev")
    assert "user,id=slirp0,tftp=/w/tftp,bootfile=pxelinux.0" in netdevs
    assert any(n.startswith("dgram,id=aoe0,local.type=unix,local.path=/w/q.sock,") for n in netdevs)
    assert "hubport,id=hp1,hubid=0,netdev=aoe0" in netdevs
    assert after(argv, "-device")[-1] == "virtio-net-pci,netdev=hp2,mac=52:54:00:12:34:56,bootindex=1"
    assert after(argv, "-boot") == ["order=n"]
    assert "-kernel" not in argv


def test_direct_boot_uses_kernel_initrd_and_append() -> None:
    argv = qemu_argv(spec(kernel=Path("/k/vmlinuz"), initrd=Path("/k/initrd.img"), append="root=aoe:e0.1 rw"))
    assert after(argv, "-kernel") == ["/k/vmlinuz"]
    assert after(argv, "-initrd") == ["/k/initrd.img"]
    assert after(argv, "-append") == ["root=aoe:e0.1 rw"]
    assert "virtio-net-pci,netdev=aoe0,mac=52:54:00:12:34:56" in after(argv, "-device")
    assert not any(n.startswith("user,") for n in after(argv, "-netdev"))


def test_accel_jumbo_and_debugcon() -> None:
    argv = qemu_argv(spec(accel="kvm", host_mtu=9000, kernel=Path("/k")))
    assert after(argv, "-machine") == ["pc,accel=kvm"]
    assert "host_mtu=9000" in after(argv, "-device")[-1]
    assert "isa-debugcon,iobase=0x402,chardev=bios" in after(argv, "-device")
    assert "-nodefaults" in argv and "-no-reboot" in argv


def test_commas_in_paths_are_doubled() -> None:
    assert optarg("/a,b/c") == "/a,,b/c"
    argv = qemu_argv(spec(bios_log=Path("/w,x/bios.log"), kernel=Path("/k")))
    assert "file,id=bios,path=/w,,x/bios.log" in after(argv, "-chardev")
