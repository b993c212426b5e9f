"""netbootgen's command line: thin commands over the library; the only place that prints and exits."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from netbootgen.cache import cache_dir
from netbootgen.errors import BootFailed, InputError
from netbootgen.inventory import Inventory, example_text, load_inventory

if TYPE_CHECKING:
    from netbootgen.emulate.boottest import BootTestOptions

inventory_arg = click.argument(
    "inventory", required=False, type=click.Path(dir_okay=False, path_type=Path)
)


def _progress(msg: str) -> None:
    click.echo(msg, err=True)


def _show_commands() -> None:
    """Log each external command to stderr as '+ COMMAND' (netbootgen.run logs them all)."""
    log = logging.getLogger("netbootgen.commands")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("+ %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="netbootgen")
@click.option("-v", "--show-commands", is_flag=True,
              help="Show each external command (dracut, QEMU, netbootgen serve, ...) before it runs. "
                   "A failing command is always shown.")
def main(show_commands: bool) -> None:
    """Boot diskless Linux machines from a root disk served over ATA-over-Ethernet.

    One TOML inventory describes machines, kernel profiles, AoE servers and exports; netbootgen renders the
    95aoe dracut module, PXELINUX per-MAC menus, kernel config fragments and vblade units from it, builds
    the kernel, initrd and TFTP tree, and boots the result under QEMU. Commands that take an INVENTORY use
    the built-in example when it is left out (see `netbootgen init`).
    """
    if show_commands:
        _show_commands()


@main.command()
@click.argument("path", required=False, default="netboot.toml", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite PATH if it exists.")
def init(path: Path, force: bool) -> None:
    """Write a commented example inventory to PATH (default netboot.toml)."""
    from netbootgen.output import write_file

    if path.exists() and not force:
        raise InputError(f"{path} exists; use --force to overwrite it")
    write_file(path, example_text().encode(), 0o644)
    click.echo(f"wrote {path}")


@main.command()
@inventory_arg
@click.option("--kernels", type=click.Choice(["here", "fetch", "skip"]), default="here", show_default=True,
              help="Check each profile's kernel (as `netbootgen kernel check`): here: only kernels already here "
                   "(kernel_path, or in the cache), fetch: download the others first, skip: none.")
def validate(inventory: Path | None, kernels: str) -> None:
    """Check INVENTORY and report every error at once (exit status 2 when there are any), then check the
    profiles' kernels can boot its machines from AoE (exit status 1 when one cannot)."""
    inv = load_inventory(inventory)  # checks everything the generators need: a loaded inventory renders
    click.echo(
        f"{inv.source}: ok ({len(inv.machines)} machines, {len(inv.exports)} exports, "
        f"{len(inv.servers)} servers, {len(inv.profiles)} profiles)"
    )
    if kernels != "skip":
        from netbootgen.kernel.check import available_kernel, check_inventory, require_bootable
        from netbootgen.kernel.fetch import profile_kernel

        trees = {}
        for name, p in inv.profiles.items():
            tree = profile_kernel(p, cache_dir()) if kernels == "fetch" else available_kernel(p, cache_dir())
            if tree is None:
                click.echo(f"profile {name}: kernel {p.kernel_path or p.kernel_version} not checked (not here; "
                           "--kernels fetch downloads a kernel_version)")
            else:
                trees[name] = tree
        reports = check_inventory(inv, trees)
        require_bootable(reports)
        for r in reports:
            click.echo(f"profile {r.profile}: kernel {r.kernel} ok (AoE, NIC drivers, root file systems)")


@main.command()
@inventory_arg
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write into (dracut/95aoe, tftp/pxelinux.cfg, kernel, export, manifest.json).")
@click.option("--prune", is_flag=True, help="Remove files an earlier render wrote that are no longer needed.")
def render(inventory: Path | None, out: Path, prune: bool) -> None:
    """Render the 95aoe module, PXELINUX files, kernel fragments and vblade units from INVENTORY."""
    from netbootgen.generate import render_inventory
    from netbootgen.output import write_tree

    inv = load_inventory(inventory)
    report = write_tree(out, render_inventory(inv), prune=prune)
    click.echo(
        f"{out}: {len(report.written)} written, {len(report.unchanged)} unchanged, {len(report.removed)} removed"
    )
    for rel in report.stale:
        click.echo(f"stale (not needed any more; --prune removes it): {rel}", err=True)


dracut_option = click.option(
    "--dracut", type=click.Choice(["system", "ng"]), default="system", show_default=True,
    help="Which dracut builds the initrd: the system's (Debian 12: 059), or ng: dracut-ng 106 (Debian 13's), "
    "fetched from Debian's trixie sources and built into the cache on first use (needs gcc, libkmod-dev).")

compress_option = click.option(
    "--compress", type=click.Choice(["gzip", "zstd", "xz", "lz4"]),
    help="The initrd's compressor (dracut --compress; default: zstd, smaller and faster to unpack than gzip). "
    "The kernel must unpack it (CONFIG_RD_*; checked before the build). docs/benchmarks.md compares them.")


@main.command()
@inventory_arg
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the rendered files and the TFTP tree (OUT/tftp).")
@click.option("--initrd", "flavour", type=click.Choice(["systemd", "shell"]), default="systemd", show_default=True,
              help="systemd initrd, or dracut's shell-only initrd (--omit systemd).")
@dracut_option
@compress_option
def build(inventory: Path | None, out: Path, flavour: str, dracut: str, compress: str | None) -> None:
    """Render, fetch each profile's kernel, build its initrd with dracut, and lay out the TFTP tree."""
    from netbootgen.build import build as run_build

    inv = load_inventory(inventory)
    result = run_build(inv, out, cache_dir(), systemd=flavour == "systemd", progress=_progress, dracut=dracut,
                       compress=compress)
    for p in result.profiles.values():
        how = "cached" if p.initrd.cached else f"built in {p.initrd.seconds:.1f} s"
        click.echo(f"profile {p.name}: kernel {p.kernel.version}, initrd {p.initrd.size / 1e6:.1f} MB ({how})")
    click.echo(f"TFTP root: {result.tftp}")


@main.command("boot-test")
@inventory_arg
@click.option("--machine", multiple=True,
              help="Machine to boot (default: the first in the inventory). Repeat it to boot several at once.")
@click.option("--all", "all_machines", is_flag=True,
              help="Boot every machine of the inventory at once (at most --jobs at a time) through one AoE target; "
                   "each guest proves it got its own export and PXELINUX file. One line per machine; --json: one "
                   "report for the fleet.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=os.cpu_count() or 1, show_default="cores",
              help="With several machines: how many guests run at once.")
@click.option("--via", type=click.Choice(["pxe", "direct"]), default="pxe", show_default=True,
              help="pxe: firmware -> PXELINUX per-MAC file -> kernel + initrd; direct: QEMU -kernel/-initrd.")
@click.option("--initrd", "flavour", type=click.Choice(["systemd", "shell"]), default="systemd", show_default=True,
              help="systemd initrd, or dracut's shell-only initrd.")
@dracut_option
@compress_option
@click.option("--accel", type=click.Choice(["auto", "tcg", "kvm"]), default="auto", show_default=True,
              help="auto: KVM only if a probe boot works here (cached), else TCG.")
@click.option("--cpus", type=click.IntRange(min=1, max=64),
              help="vCPUs of the guest. Default: 2 where the host has 2 cores or more (TCG runs each in its own "
                   "thread); with several machines, 1 per guest.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report as JSON to this file.")
@click.option("--stage-timeout", type=click.FloatRange(min=1), default=180, show_default=True,
              help="Seconds each stage may take after the previous one.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the run's files (console log, root image, TFTP tree) here instead of a temporary folder.")
@click.option("--timeline", "timeline_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Draw the stages on a time axis into this SVG file (see `netbootgen timeline`).")
@click.option("--root", type=click.Choice(["busybox", "debian"]), default="busybox", show_default=True,
              help="busybox: a 64 MiB root whose init writes a file and powers off (poweroff -f); debian: the "
                   "machine's Debian image (`netbootgen image build`, cached), booted to multi-user and powered "
                   "off through systemd, then checked on the host (clean file system, the check unit's files).")
@click.option("--root-image", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Boot this root image (in the machine's fstype, with the netbootgen check unit) instead; it "
                   "is served copy-on-write and never modified unless --persist.")
@click.option("--persist", is_flag=True, help="With --root-image: the guest writes to the image itself.")
@click.option("--image-size", default="1G", show_default=True, help="Size of the Debian image (--root debian).")
@click.option("--network", type=click.Choice(["slirp", "netns"]), default="slirp", show_default=True,
              help="slirp: QEMU's own DHCP/TFTP; netns (root): a network namespace with a bridge, the real dnsmasq "
                   "with the rendered dnsmasq/netbootgen.conf, the AoE target on the bridge, the guest on a tap.")
@click.option("--firmware", type=click.Choice(["bios", "uefi"]), default="bios", show_default=True,
              help="bios: SeaBIOS + iPXE -> PXELINUX; uefi: OVMF + iPXE's EFI driver -> GRUB (grub.cfg-01-MAC).")
@click.option("--aoe-target", type=click.Choice(["serve", "vblade"]), default="serve", show_default=True,
              help="With --network netns: netbootgen serve (AF_PACKET on the bridge), or vblade run with the "
                   "rendered unit's command.")
@click.option("--dhcp-mode", type=click.Choice(["server", "proxy"]),
              help="With --network netns: run dnsmasq in this mode (default: the inventory's [dhcp] mode); proxy "
                   "adds another DHCP server that gives addresses only.")
@click.option("--entry", type=click.Choice(["current", "previous"]), default="current", show_default=True,
              help="The per-MAC menu's entry to boot: previous (the known-good vmlinuz.prev and initrd.prev.img) "
                   "is typed at PXELINUX's boot: prompt over the serial console (with --firmware uefi: chosen in "
                   "GRUB's menu); --via direct boots the entry's files from the TFTP tree.")
@click.option("--mac", help="The guest's MAC instead of the machine's first: another of its MACs, or one no machine "
                            "has, which gets PXELINUX's pxelinux.cfg/default: its local boot is the outcome reported "
                            "(exit status 0 when it is seen), not a timeout.")
def boot_test(inventory: Path | None, machine: tuple[str, ...], all_machines: bool, jobs: int, via: str,
              flavour: str, dracut: str,
              compress: str | None, accel: str, cpus: int | None,
              json_path: Path | None, stage_timeout: float, workdir: Path | None,
              timeline_path: Path | None, root: str, root_image: Path | None, persist: bool,
              image_size: str, network: str, firmware: str, aoe_target: str, dhcp_mode: str | None,
              entry: str, mac: str | None) -> None:
    """Boot a machine of INVENTORY under QEMU with its root on netbootgen's AoE target; report each stage.

    Exit status 0 only if every stage is reached and the guest's write reached the AoE disk (a real root: and
    its file system is clean after the poweroff); with a --mac no machine has, if PXELINUX's local boot is seen."""
    from netbootgen.emulate.boottest import BootTestOptions
    from netbootgen.emulate.boottest import boot_test as run_boot_test
    from netbootgen.image.fs import parse_size
    from netbootgen.output import write_file

    inv = load_inventory(inventory)
    opts = BootTestOptions(machine=machine[0] if machine else None, via=via, accel=accel,
                           systemd=flavour == "systemd", dracut=dracut,
                           compress=compress,
                           stage_timeout=stage_timeout, workdir=workdir, root=root, root_image=root_image,
                           persist=persist, image_size=parse_size(image_size), network=network,
                           firmware=firmware, aoe_target=aoe_target, dhcp_mode=dhcp_mode, entry=entry, mac=mac,
                           cpus=cpus)
    if all_machines or len(machine) > 1:
        if all_machines and machine:
            raise InputError("--all boots every machine: leave out --machine (or name each machine to boot)")
        return _boot_fleet(inv, machine, jobs, opts, json_path, timeline_path)
    result = run_boot_test(inv, opts, cache_dir(), _progress)
    if json_path is not None:
        write_file(json_path, (json.dumps(result.to_json(), indent=2) + "\n").encode(), 0o644)
    if timeline_path is not None:
        from netbootgen.emulate.timeline import timeline_svg

        write_file(timeline_path, timeline_svg([("", result.to_json())]).encode(), 0o644)
    who = f"{result.machine}{f' with MAC {result.mac}' if result.mac else ''}"
    how = f"{result.via}{f', entry {result.entry}' if result.entry != 'current' else ''}"
    click.echo(f"\nboot-test {who} via {how} ({result.accel}):")
    for s in result.report.stages:
        t = f"{s.t:7.2f} s" if s.t is not None else "      -  "
        click.echo(f"  {s.name:<15} {t}  {'ok' if s.ok else 'NOT REACHED'}")
    if not result.localboot:
        click.echo(f"  {'disk write':<15} {'':9}  {'ok' if result.disk_marker else 'MISSING'}")
    rc = result.root_check
    if rc is not None:
        click.echo(f"  {'clean fs':<15} {'':9}  {'ok' if rc.clean else 'NOT CLEAN'} ({rc.fs_detail})")
    if not result.ok:
        detail = result.report.failure or (
            f"the root file system is not clean after the poweroff ({rc.fs_detail})" if rc and not rc.clean
            else "the guest's write did not reach the AoE disk")
        failed = next((s.name for s in result.report.stages if not s.ok), None)
        where = f" at stage {failed}" if failed else ""
        raise BootFailed(f"boot-test failed{where}: {detail}\nlast console lines:\n{result.report.last_lines()}")
    click.echo(f"outcome: {result.outcome}" if result.localboot else "all stages reached")


def _boot_fleet(inv: Inventory, machines: tuple[str, ...], jobs: int, opts: BootTestOptions,
                json_path: Path | None, timeline_path: Path | None) -> None:
    """boot-test of several machines: one line per machine, one JSON report for the fleet."""
    from netbootgen.emulate.fleetboot import FleetOptions, boot_fleet
    from netbootgen.output import write_file

    fleet = boot_fleet(inv, FleetOptions(machines, jobs, opts), cache_dir(), _progress)
    if json_path is not None:
        write_file(json_path, (json.dumps(fleet.to_json(), indent=2) + "\n").encode(), 0o644)
    if timeline_path is not None:
        from netbootgen.emulate.timeline import timeline_svg

        rows = [("", r.to_json()) for r in fleet.runs]
        write_file(timeline_path, timeline_svg(rows, "netbootgen boot-test fleet").encode(), 0o644)
    click.echo(f"\nboot-test of {len(fleet.runs)} machines via {fleet.via} ({fleet.accel}, {fleet.jobs} at a time, "
               f"{fleet.seconds:.1f} s):")
    width = max(len(r.result.machine) for r in fleet.runs)
    for r in fleet.runs:
        how = "ok" if r.ok else f"failed at {r.failed_stage}"
        click.echo(f"  {r.result.machine:<{width}}  {how:<28} {r.result.report.seconds:7.1f} s")
    failed = [r for r in fleet.runs if not r.ok]
    if failed:
        lines = [f"{r.result.machine}: {r.result.report.failure or '; '.join(r.problems)}" for r in failed]
        raise BootFailed(f"boot-test failed for {len(failed)} of {len(fleet.runs)} machines:\n" + "\n".join(lines))
    click.echo("all machines booted, each with its own export and PXELINUX file"
               if fleet.via == "pxe" else "all machines booted, each with its own export and kernel arguments")


@main.command()
@click.argument("reports", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The SVG file to write.")
@click.option("--title", default="netbootgen boot-test timeline", show_default=True, help="The picture's title.")
def timeline(reports: tuple[Path, ...], output: Path, title: str) -> None:
    """Draw the stages of boot-test JSON REPORTS (boot-test --json) on one time axis, as SVG.

    One row per report (labelled `machine (via)`; by file name when two reports name the same machine), or
    per machine of a fleet report (boot-test --all --json, each from the time its guest started), one bar per
    stage from the previous stage to the time it was reached; a failed run ends in a hatched red bar named
    after the stage it did not reach."""
    from netbootgen.emulate.timeline import report_label, report_row, timeline_svg
    from netbootgen.output import write_file

    loaded = []
    for path in reports:
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{path}: not a boot-test JSON report: {e}") from None
        if not isinstance(data, dict):
            raise InputError(f"{path}: not a boot-test JSON report (expected an object, got {type(data).__name__})")
        fleet = data.get("fleet") is True  # boot-test --all: a row per machine
        runs = data.get("machines") if fleet else [data]
        if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
            raise InputError(f"{path}: 'machines' must be a list of boot-test reports")
        for i, run in enumerate(runs):
            try:
                report_row(run, f"{path}: machines[{i}]" if fleet else str(path))
            except ValueError as e:
                raise InputError(str(e)) from None
            loaded.append((path, run))
    labels = [report_label(data) for _, data in loaded]
    named = [(str(path) if labels.count(label) > 1 else "", data)
             for (path, data), label in zip(loaded, labels, strict=True)]
    write_file(output, timeline_svg(named, title).encode(), 0o644)
    click.echo(f"wrote {output} ({len(loaded)} runs)")


def _register_subcommands() -> None:
    from netbootgen.aoe.command import serve_command
    from netbootgen.image.command import image_group
    from netbootgen.kernel.command import kernel_group
    from netbootgen.modules.command import initrd_group
    from netbootgen.pxe.command import pxe_group

    main.add_command(serve_command)
    main.add_command(pxe_group)
    main.add_command(image_group)
    main.add_command(kernel_group)
    main.add_command(initrd_group)


_register_subcommands()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
