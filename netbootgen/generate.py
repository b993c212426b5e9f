"""Render everything an inventory describes into one in-memory file tree."""

from __future__ import annotations

from netbootgen.export.vblade import render_units
from netbootgen.inventory import Inventory
from netbootgen.kernel.fragment import render_fragments
from netbootgen.modules.aoe import render_module
from netbootgen.pxe.menu import render_pxe
from netbootgen.render import FileTree


def render_inventory(inv: Inventory) -> FileTree:
    files: FileTree = {}
    files.update(render_module(inv))
    files.update(render_pxe(inv))
    files.update(render_fragments(inv))
    files.update(render_units(inv))
    return dict(sorted(files.items()))
