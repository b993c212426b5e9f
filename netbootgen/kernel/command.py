"""`netbootgen kernel ...`: check a profile's kernel from its own files before anything is built."""

from __future__ import annotations

import json
from pathlib import Path

import click

from netbootgen.cache import cache_dir
from netbootgen.errors import InputError, NetbootgenError
from netbootgen.inventory import Inventory, load_inventory
from netbootgen.kernel.check import KernelFacts, check_inventory, nic_chain, require_bootable
from netbootgen.kernel.fetch import KernelTree, profile_kernel
from netbootgen.kernel.modinfo import PciDevice


def _progress(msg: str) -> None:
    click.echo(msg, err=True)


def _profiles(inv: Inventory, name: str | None) -> list[str]:
    if name is None:
        return list(inv.profiles)
    if name not in inv.profiles:
        raise InputError(f"--profile: no profile named {name!r} (the inventory has: {', '.join(inv.profiles)})")
    return [name]


def _kernels(inv: Inventory, names: list[str]) -> dict[str, KernelTree]:
    kernels = {}
    for n in names:
        p = inv.profiles[n]
        _progress(f"profile {n}: kernel {p.kernel_path or p.kernel_version} (downloaded once, then cached) ...")
        kernels[n] = profile_kernel(p, cache_dir())
    return kernels


@click.group("kernel")
def kernel_group() -> None:
    """Check kernels from their own files: config, module index, each module's .modinfo (pyelftools)."""


@kernel_group.command("check")
@click.argument("inventory", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--profile", help="Check only this profile (default: every profile).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check_command(inventory: Path | None, profile: str | None, as_json: bool) -> None:
    """Can each profile's kernel boot its machines from AoE?

    Reports, per profile: AoE (CONFIG_ATA_OVER_ETH built in, or aoe.ko with its dependencies), each NIC
    driver with the chain it needs (virtio_net: the virtio_pci transport), each NIC of nic_pci with the
    drivers the kernel's aliases give it, each machine's root file system, and that every module's vermagic is
    the kernel's release. Exit status 1, with the Kconfig lines that fix it, when something is missing."""
    inv = load_inventory(inventory)
    reports = check_inventory(inv, _kernels(inv, _profiles(inv, profile)), _progress)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in reports], indent=2))
    else:
        for r in reports:
            click.echo(f"profile {r.profile}: kernel {r.kernel}")
            for f in r.findings:
                mods = ", ".join(f"{m} (built in)" if m in f.builtin else m for m in f.modules) or "-"
                click.echo(f"  {'ok     ' if f.ok else 'MISSING'}  {f.what}: {f.problem or mods}")
                for note in f.notes:
                    click.echo(f"           note: {note}")
    require_bootable(reports)
    if not as_json:
        click.echo("kernel check: ok")


@kernel_group.command("nic-for")
@click.argument("pci_id")
@click.argument("inventory", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--profile", help="Whose kernel to look in (default: the first profile).")
def nic_for_command(pci_id: str, inventory: Path | None, profile: str | None) -> None:
    """Which modules drive PCI device PCI_ID (vendor:device, e.g. 1af4:1000) in a profile's kernel, in load
    order (dependencies first; a virtio device: the PCI transport, then the driver on the virtio bus)."""
    try:
        dev = PciDevice.parse(pci_id)
    except NetbootgenError as e:
        raise click.BadParameter(e.message, param_hint="PCI_ID") from None
    inv = load_inventory(inventory)
    name = _profiles(inv, profile)[0]
    facts = KernelFacts.load(_kernels(inv, [name])[name])
    chain, problem = nic_chain(facts, dev)
    for m in chain:
        click.echo(f"{m} (built in)" if facts.index.is_builtin(m) else m)
    if problem:
        raise NetbootgenError(f"{pci_id}: {problem}")
