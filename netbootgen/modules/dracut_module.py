"""The 95aoe dracut module: static shell logic with its few values templated."""

from __future__ import annotations

from netbootgen.fleet import fs_modules
from netbootgen.inventory import Inventory
from netbootgen.render import FileTree, RenderedFile, inventory_header, render_template, template_names

MODULE_DIR = "95aoe"


def nic_drivers(inv: Inventory) -> list[str]:
    """Every NIC driver any profile needs, sorted, so one module serves the whole fleet."""
    return sorted({drv for p in inv.profiles.values() for drv, _ in p.nic_drivers})


def root_fs_modules(inv: Inventory) -> list[str]:
    """The file-system modules of every machine's root, sorted (one module serves the whole fleet)."""
    used = {m.profile for m in inv.machines.values()} or set(inv.profiles)
    return sorted({fs for name in used for fs in fs_modules(inv, name)})


def module_context(inv: Inventory) -> dict[str, str]:
    return {
        "header": inventory_header(inv),
        "nic_drivers": " ".join(nic_drivers(inv)),
        "fs_modules": " ".join(root_fs_modules(inv)),
    }


def render_module(inv: Inventory, prefix: str = "dracut") -> FileTree:
    ctx = module_context(inv)
    files: FileTree = {}
    for name in template_names(MODULE_DIR):
        files[f"{prefix}/{name}"] = RenderedFile(render_template(name, ctx), 0o755)
    return files
