"""Imports point one way: cli -> testing -> emulate -> builders -> generators -> renderer -> inventory -> base.

Every module of netbootgen/ has a rank (RANKS, first matching prefix); a module may import only modules of a
lower rank, or modules of its own package with the same rank (the parts of one component, e.g. aoe/). A new
module must be given a rank here, and no module may grow past 500 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "netbootgen"
MAX_LINES = 500

# Highest first. A name matches the first entry equal to it or starting with it followed by a dot.
RANKS: list[tuple[str, int]] = [
    # cli: the commands
    ("netbootgen.image.command", 85),
    ("netbootgen.__main__", 91), ("netbootgen.cli", 90), ("netbootgen.aoe.__main__", 90),
    ("netbootgen.aoe.command", 85), ("netbootgen.pxe.command", 85), ("netbootgen.kernel.command", 85),
    ("netbootgen.modules.command", 85),
    # helpers for tests and benchmarks: an AoE client, a busybox guest
    ("netbootgen.testing", 80),
    # emulation: boot-test on the console follower, QEMU command lines and root images
    ("netbootgen.emulate.fleetboot", 72), ("netbootgen.emulate.boottest", 71), ("netbootgen.emulate", 70),
    # builders: the pipeline, then what it calls
    ("netbootgen.image", 60),  # root images: mmdebstrap recipe, file-system images, reading them back
    ("netbootgen.build", 65), ("netbootgen.modules.inspect", 63), ("netbootgen.modules.initrd", 62),
    ("netbootgen.modules.dracut_ng", 61),
    ("netbootgen.kernel.check", 61), ("netbootgen.kernel.fetch", 60),
    ("netbootgen.pxe.tftp", 60), ("netbootgen.aoe", 60),
    # generators: generate.py calls each of them
    ("netbootgen.generate", 55), ("netbootgen.modules.dracut_module", 50), ("netbootgen.pxe", 50),
    ("netbootgen.kernel.fragment", 50), ("netbootgen.export", 50),
    # renderer and the one writer
    ("netbootgen.output", 42), ("netbootgen.render", 40),
    # inventory: derived facts over the loader over the model
    ("netbootgen.fleet", 34), ("netbootgen.inventory", 33), ("netbootgen.dhcp_table", 32), ("netbootgen.model", 31),
    ("netbootgen.checker", 30),
    # base
    ("netbootgen.errors", 10), ("netbootgen.run", 15), ("netbootgen.cache", 10), ("netbootgen.kconfig", 10),
    ("netbootgen.kernel.modinfo", 12), ("netbootgen.modules.cpio", 12),
    ("netbootgen", 0),  # the package's own __init__
]  # fmt: skip


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def rank(name: str) -> int:
    for prefix, r in RANKS:
        if name == prefix or name.startswith(prefix + "."):
            return r
    raise KeyError(name)


def package(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imported(source: str) -> list[tuple[int, str]]:
    """(line, module) of every absolute netbootgen import, function-level ones included."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "netbootgen"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "netbootgen":
            assert node.level == 0, "relative import"
            # `from netbootgen.aoe import protocol` imports the module netbootgen.aoe.protocol
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def resolve(name: str) -> str:
    """The module an imported name lives in (strip a trailing attribute such as a class or function)."""
    while name and not ((PACKAGE.parent / name.replace(".", "/")).with_suffix(".py").exists()
                        or (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()):
        name = name.rpartition(".")[0]
    return name


def violations(path: Path, source: str) -> list[str]:
    me = module_name(path)
    mine, pkg = rank(me), package(me, path)
    bad = []
    for line, name in imported(source):
        if name.rpartition(".")[2].startswith("_"):
            continue  # a compiled extension (netbootgen.aoe._fastpath): C, no imports of its own
        target = resolve(name)
        if target == me:
            continue
        theirs = rank(target)
        same_part = theirs == mine and target.rpartition(".")[0] == pkg and pkg != "netbootgen"
        if theirs >= mine and not same_part:
            where = f"{path.relative_to(PACKAGE.parent)}:{line}"
            bad.append(f"{where}: {me} (rank {mine}) imports {target} (rank {theirs})")
    return bad


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_rank() -> None:
    for path in MODULES:
        rank(module_name(path))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    assert violations(path, path.read_text()) == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_size(path: Path) -> None:
    assert len(path.read_text().splitlines()) < MAX_LINES


@pytest.mark.parametrize(
    ("module", "source", "ok"),
    [
        ("inventory.py", "from netbootgen.cli import main", False),  # up
        ("inventory.py", "def f():\n    import netbootgen.emulate.boottest", False),  # up, inside a function
        ("pxe/menu.py", "from netbootgen.export.vblade import render_units", False),  # sideways: generators
        ("aoe/command.py", "from netbootgen.modules.dracut_module import MODULE_DIR", True),  # down
        ("aoe/server.py", "from netbootgen.aoe import dgram", True),  # a part of the same component
        ("aoe/server.py", "from netbootgen.pxe.tftp import install_file", False),  # sideways: builders
        ("render.py", "from netbootgen.inventory import Inventory", True),
        ("fleet.py", "from netbootgen.render import inventory_header", False),
    ],
)
def test_the_check_catches_what_it_should(module: str, source: str, ok: bool) -> None:
    assert (violations(PACKAGE / module, source) == []) is ok
