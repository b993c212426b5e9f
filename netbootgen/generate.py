"""Render everything an inventory describes into one in-memory file tree."""

from __future__ import annotations

from netbootgen.errors import NetbootgenError
from netbootgen.export.vblade import render_units
from netbootgen.inventory import Inventory
from netbootgen.kernel.fragment import render_fragments
from netbootgen.modules.dracut_module import render_module
from netbootgen.pxe.dnsmasq import render_dnsmasq
from netbootgen.pxe.grub import render_grub
from netbootgen.pxe.menu import render_pxe
from netbootgen.render import FileTree


def render_inventory(inv: Inventory) -> FileTree:
    """All generated files, by path relative to the output folder, sorted by path. Nothing is written."""
    files: FileTree = {}
    for part in (render_module(inv), render_pxe(inv), render_grub(inv), render_dnsmasq(inv), render_fragments(inv),
                 render_units(inv)):
        clash = files.keys() & part.keys()
        if clash:
            raise NetbootgenError(f"internal error: two generators produce {', '.join(sorted(clash))}")
        files.update(part)
    return dict(sorted(files.items()))
