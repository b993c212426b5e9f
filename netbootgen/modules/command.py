"""`netbootgen initrd ...`: look inside an initrd without lsinitrd, and check it can boot from AoE."""

from __future__ import annotations

import json
from pathlib import Path

import click

from netbootgen.cache import cache_dir
from netbootgen.errors import InputError, NetbootgenError
from netbootgen.inventory import load_inventory
from netbootgen.kernel.check import KernelFacts, check_profile
from netbootgen.kernel.fetch import profile_kernel
from netbootgen.kernel.fragment import profile_fstypes
from netbootgen.modules.inspect import InitrdReport, check_against, inspect_initrd


class InitrdMismatch(NetbootgenError):
    """The initrd lacks something its kernel or inventory needs (exit status 1)."""


@click.group("initrd")
def initrd_group() -> None:
    """Look inside initrds (pure Python: no lsinitrd, cpio or dracut needed)."""


def _print(r: InitrdReport) -> None:
    click.echo(f"{r.path}: {r.size} bytes ({r.size / 1e6:.1f} MB), kernel {r.kernel or '-'}")
    for offset, kind, size, n in r.archives:
        click.echo(f"  archive at byte {offset}: {kind}, {size} bytes, {n} entries")
    if r.dracut_args:
        click.echo(f"dracut arguments: {r.dracut_args}")
    click.echo(f"dracut modules ({len(r.dracut_modules)}): {' '.join(r.dracut_modules) or '-'}")
    click.echo(f"kernel modules ({len(r.modules)}):")
    for m in r.modules.values():
        deps = f"  depends: {', '.join(m.depends)}" if m.depends else ""
        click.echo(f"  {m.name:<24} {m.vermagic.strip()}{deps}")
    click.echo(f"95aoe files ({len(r.aoe_files)}):")
    for name in r.aoe_files:
        click.echo(f"  {name}")
    click.echo(f"etc/cmdline.d ({len(r.cmdline)}):")
    for name, text in r.cmdline.items():
        click.echo(f"  {name}: {text}")


@initrd_group.command("inspect")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--inventory", "inventory", type=click.Path(dir_okay=False, path_type=Path),
              help="Also check the initrd against this inventory's profile and its kernel (default: only on "
                   "its own; with --profile alone: the built-in example).")
@click.option("--profile", help="The profile the initrd is for (default: the inventory's first).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def inspect_command(file: Path, inventory: Path | None, profile: str | None, as_json: bool) -> None:
    """Print what initrd FILE holds: its archives and compression, dracut's modules and arguments, the kernel
    modules with their vermagic, the 95aoe files and etc/cmdline.d.

    Checks it can boot from AoE: 95aoe and AoE are there, and each module's dependencies and vermagic. With
    --inventory or --profile also each module the profile's kernel check names (AoE, the NIC chains, the root
    file systems). Exit status 1 on a mismatch."""
    r = inspect_initrd(file)
    if inventory is not None or profile is not None:
        inv = load_inventory(inventory)
        name = profile or next(iter(inv.profiles))
        if name not in inv.profiles:
            raise InputError(f"--profile: no profile named {name!r} (the inventory has: {', '.join(inv.profiles)})")
        facts = KernelFacts.load(profile_kernel(inv.profiles[name], cache_dir()))
        check_against(r, check_profile(facts, inv.profiles[name], profile_fstypes(inv).get(name, {"ext4"})))
    if as_json:
        click.echo(json.dumps(r.to_json(), indent=2))
    else:
        _print(r)
    if r.problems:
        raise InitrdMismatch(f"{file}: " + "\n  ".join(["the initrd cannot boot from AoE:", *r.problems]))
    if not as_json:
        click.echo("initrd check: ok")
