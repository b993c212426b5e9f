"""`netbootgen image ...`: root images for the machines of an inventory."""

from __future__ import annotations

from pathlib import Path

import click

from netbootgen.cache import cache_dir
from netbootgen.image.build import DEFAULT_SIZE, build_image, copy_image
from netbootgen.image.fs import parse_size
from netbootgen.inventory import load_inventory


@click.group("image")
def image_group() -> None:
    """Root images for the machines of an inventory (a Debian 12 root with systemd, served over AoE)."""


@image_group.command("build")
@click.argument("inventory", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--machine", help="Machine whose root to make (default: the first in the inventory).")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a (sparse) copy of the image here; without it, only the cache holds it.")
@click.option("--size", default=f"{DEFAULT_SIZE >> 30}G", show_default=True,
              help="Size of the file system (e.g. 1G, 1536M); the image file is sparse.")
def image_build(inventory: Path | None, machine: str | None, out: Path | None, size: str) -> None:
    """Make a machine's Debian 12 root image with mmdebstrap, in the machine's fstype (ext4 or xfs).

    The root has systemd, udev, a serial getty on the machine's serial console (not in a check boot),
    dracut-core with the rendered 95aoe in /usr/lib/dracut/modules.d, the AoE root in /etc/fstab with _netdev,
    and a check unit (run only with netbootgen.check on the kernel command line: it writes known files and
    powers off).
    Nothing configures the network: the NIC stays as the initrd left it. Runs as root. The image is cached by
    everything it depends on; the downloaded packages are kept in the cache too."""
    inv = load_inventory(inventory)

    def progress(msg: str) -> None:
        click.echo(msg, err=True)

    result = build_image(inv, machine, cache_dir(), size=parse_size(size), progress=progress)
    how = "cached" if result.cached else f"built in {result.seconds:.1f} s"
    click.echo(f"image {result.path} ({result.fstype}, {result.size >> 20} MiB, "
               f"{result.allocated / 1e6:.0f} MB on disk; {how})")
    if out is not None:
        copy_image(result.path, out)
        click.echo(f"copied to {out}")
