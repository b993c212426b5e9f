"""The build pipeline shared by `netbootgen build` and boot-test: render, write, fetch each profile's kernel,
build its initrd with dracut (cached), and lay out the TFTP tree."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from netbootgen.fleet import fs_modules
from netbootgen.generate import render_inventory
from netbootgen.inventory import Inventory
from netbootgen.kernel.check import ProfileReport, check_inventory, require_bootable
from netbootgen.kernel.fetch import KernelTree, profile_kernel
from netbootgen.modules.dracut_ng import DRACUT_NAMES
from netbootgen.modules.initrd import InitrdResult, InitrdSpec, build_initrd, remove_stale
from netbootgen.output import WriteReport, write_tree
from netbootgen.pxe.tftp import install_boot_files, install_grub, install_pxelinux
from netbootgen.render import FileTree

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BuiltProfile:
    name: str
    kernel: KernelTree
    initrd: InitrdResult
    check: ProfileReport


@dataclass(frozen=True)
class BuildResult:
    files: FileTree
    written: WriteReport
    tftp: Path
    profiles: dict[str, BuiltProfile]


# zstd, not dracut 059's gzip: 12% smaller and 2-3x less CPU to unpack (docs/benchmarks.md, issue 10)
DEFAULT_COMPRESS = "zstd"


def build(
    inv: Inventory,
    out: Path,
    cache: Path,
    *,
    systemd: bool = True,
    profiles: Sequence[str] | None = None,
    progress: Progress = lambda msg: None,
    dracut: str = "system",
    compress: str | None = None,
) -> BuildResult:
    """Fetch each profile's kernel (all profiles, or those named) and check it can boot the profile's machines
    (netbootgen.kernel.check: KernelCheckFailed before anything is written), then render `inv` into `out`,
    build each initrd (with the system's dracut, or dracut-ng: `dracut="ng"`; `compress`: dracut --compress, None
    for DEFAULT_COMPRESS) and install it with the kernel
    into `out`/tftp beside PXELINUX."""
    names = profiles if profiles is not None else list(inv.profiles)
    kernels: dict[str, KernelTree] = {}
    for name in names:
        p = inv.profiles[name]
        progress(f"profile {name}: kernel {p.kernel_path or p.kernel_version} ...")
        kernels[name] = profile_kernel(p, cache)
    compressor = compress or DEFAULT_COMPRESS
    checks = {r.profile: r for r in check_inventory(inv, kernels, progress, compressor)}
    require_bootable(checks.values())
    files = render_inventory(inv)
    written = write_tree(out, files)
    tftp = out / "tftp"
    install_pxelinux(tftp)
    install_grub(tftp)
    flavour = "systemd" if systemd else "shell-only"
    built: dict[str, BuiltProfile] = {}
    for name in names:
        p, kernel = inv.profiles[name], kernels[name]
        progress(f"profile {name}: {flavour} initrd for {kernel.version} with {DRACUT_NAMES[dracut]} and 95aoe "
                 "(cached when nothing changed) ...")
        spec = InitrdSpec.for_profile(kernel, files, p, systemd=systemd,
                                      filesystems=tuple(fs_modules(inv, name)), dracut=dracut, compress=compressor)
        if pci := checks[name].pci_nic_modules:  # NICs named by PCI id: drivers the kernel's aliases give
            spec = replace(spec, drivers=tuple(dict.fromkeys(spec.drivers + pci)))
        initrd = build_initrd(spec, cache)
        remove_stale(spec, cache)
        if install_boot_files(tftp, name, kernel.vmlinuz, initrd.path):
            progress(f"profile {name}: the kernel and initrd this build replaces are kept as vmlinuz.prev and "
                     "initrd.prev.img (the menus' `previous` entry)")
        how = "cached" if initrd.cached else f"built in {initrd.seconds:.1f} s"
        progress(f"profile {name}: kernel {kernel.version}, initrd {initrd.path.name}, "
                 f"{initrd.size / 1e6:.1f} MB ({how})")
        built[name] = BuiltProfile(name, kernel, initrd, checks[name])
    return BuildResult(files, written, tftp, built)
