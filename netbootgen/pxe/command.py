"""`netbootgen pxe ...`: look at the PXELINUX files an inventory renders, as a client would see them."""

from __future__ import annotations

import uuid
from pathlib import Path

import click

from netbootgen.inventory import load_inventory, normalize_mac
from netbootgen.pxe.grub import GRUB_DIR, GrubMenu, grub_menus
from netbootgen.pxe.lookup import config_candidates, find_config, grub_candidates, ip_hex
from netbootgen.pxe.menu import PXE_DIR, Menu, pxe_menus


def _mac(ctx: click.Context, param: click.Parameter, value: str) -> str:
    norm = normalize_mac(value)
    if norm is None:
        raise click.BadParameter(f"{value!r} is not a MAC address (e.g. 52:54:00:12:34:56)", ctx, param)
    return norm


def _ip(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            ip_hex(value)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not an IPv4 address (A.B.C.D)", ctx, param) from None
    return value


def _uuid(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            uuid.UUID(value)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a UUID", ctx, param) from None
    return value


def describe(name: str, menu: Menu, tried: list[str]) -> list[str]:
    """The lines `pxe which` prints for the client that fetches pxelinux.cfg/`name`."""
    who = f"machine {menu.machine}" if menu.machine else "no machine: the fallback"
    lines = [f"file:   {PXE_DIR}/{name} ({who})"]
    if tried:
        lines.append("        after trying " + ", ".join(tried) + " (not rendered)")
    e = menu.default
    wait = "at once"
    if menu.prompt and menu.timeout:
        wait = f"after {menu.timeout / 10:g} s at the boot: prompt"
    lines.append(f"label:  {e.label} (the DEFAULT entry, booted {wait}): {e.title}")
    if e.kernel is None:
        lines.append(f"boots:  LOCALBOOT {e.localboot}")
    else:
        lines += [f"kernel: {e.kernel}", f"initrd: {e.initrd}", f"append: {e.append}"]
    others = [x.label for x in menu.entries if x is not e]
    if others:
        lines.append("other entries: " + ", ".join(others))
    return lines


def describe_grub(name: str, menu: GrubMenu, tried: list[str]) -> list[str]:
    """The lines `pxe which --uefi` prints for the client that fetches grub/`name`."""
    who = f"machine {menu.machine}" if menu.machine else "no machine: the fallback"
    lines = [f"file:   {GRUB_DIR}/{name} ({who})"]
    if tried:
        lines.append("        after trying " + ", ".join(tried) + " (not rendered)")
    e = menu.default
    wait = f"after {menu.timeout} s at the menu" if menu.timeout else "at once"
    lines.append(f"entry:  {e.id} (the default entry, booted {wait}): {e.title}")
    lines += [f"        {c}" for c in e.commands]
    others = [x.id for x in menu.entries if x is not e]
    if others:
        lines.append("other entries: " + ", ".join(others))
    return lines


@click.group("pxe")
def pxe_group() -> None:
    """PXELINUX and GRUB: which file and entry a client gets from the rendered pxelinux.cfg/ (BIOS) or grub/
    (UEFI)."""


@pxe_group.command("which")
@click.argument("mac", callback=_mac)
@click.argument("inventory", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--ip", callback=_ip, metavar="A.B.C.D",
              help="The client's IPv4 address (PXELINUX tries it in hex).")
@click.option("--uuid", "client_uuid", callback=_uuid,
              help="The client's SMBIOS UUID (PXELINUX tries it first).")
@click.option("--uefi", is_flag=True,
              help="A UEFI client: GRUB's lookup in grub/ (grub.cfg-01-MAC, grub.cfg-IP in hex, grub.cfg).")
def which(mac: str, inventory: Path | None, ip: str | None, client_uuid: str | None, uefi: bool) -> None:
    """Print the file a client with MAC would fetch from the files INVENTORY renders, in PXELINUX's lookup
    order (UUID, 01-MAC, IP in hex shortened digit by digit, default), and the entry it would boot. With
    --uefi, the same for GRUB 2.06 (01-MAC, IP in hex shortened digit by digit, grub.cfg; no UUID)."""
    if uefi:
        if client_uuid is not None:
            raise click.UsageError("--uuid: GRUB 2.06 does not look for a file named after the UUID; leave it "
                                   "out with --uefi")
        grubs = grub_menus(load_inventory(inventory))
        found = grub_candidates(mac, ip)
        gname = find_config(found, grubs)
        if gname is None:  # pragma: no cover - grub.cfg is always rendered
            raise click.ClickException(f"no file in {GRUB_DIR}/ matches {mac}")
        tried = [f"{GRUB_DIR}/{c}" for c in found[: found.index(gname)]]
        click.echo("\n".join(describe_grub(gname, grubs[gname], tried)))
        return
    menus = pxe_menus(load_inventory(inventory))
    candidates = config_candidates(mac, ip, client_uuid)
    name = find_config(candidates, menus)
    if name is None:  # pragma: no cover - `default` is always rendered
        raise click.ClickException(f"no file in {PXE_DIR}/ matches {mac}")
    tried = [f"{PXE_DIR}/{c}" for c in candidates[: candidates.index(name)]]
    click.echo("\n".join(describe(name, menus[name], tried)))
