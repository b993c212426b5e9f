"""Kernel modules as the kernel sees them: each module's `.modinfo` ELF section (read with pyelftools, from
`.ko`, `.ko.xz`, `.ko.zst` or `.ko.gz`) and a module index over a `lib/modules/VER` folder (modules.dep,
modules.alias, modules.builtin and modules.builtin.modinfo), with modalias matching as udev/modprobe do it.

Pure reading: no depmod, no modinfo, no modprobe."""

from __future__ import annotations

import fnmatch
import gzip
import io
import lzma
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import zstandard
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from netbootgen.errors import NetbootgenError

MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


def module_name(path: str | Path) -> str:
    """'kernel/drivers/net/virtio_net.ko.zst' -> 'virtio_net' (dashes become underscores, as in the kernel)."""
    name = str(path).rpartition("/")[2]  # not Path(path).name: called for each of ~14000 index lines
    for suffix in MODULE_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.replace("-", "_")


def decompress_module(data: bytes, name: str = "") -> bytes:
    """A module file's ELF bytes: xz, zstd and gzip are recognised by their magic, anything else is as is."""
    try:
        if data.startswith(b"\xfd7zXZ\x00"):
            return lzma.decompress(data)
        if data.startswith(b"\x28\xb5\x2f\xfd"):
            return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
        if data.startswith(b"\x1f\x8b"):
            return gzip.decompress(data)
    except (lzma.LZMAError, zstandard.ZstdError, OSError, EOFError) as e:
        raise NetbootgenError(f"{name or 'kernel module'}: cannot decompress: {e}") from None
    return data


@dataclass(frozen=True)
class ModInfo:
    """The `.modinfo` fields of one module, in section order (alias, firmware, depends, ... may repeat)."""

    fields: tuple[tuple[str, str], ...]

    def all(self, key: str) -> list[str]:
        return [v for k, v in self.fields if k == key]

    def get(self, key: str) -> str | None:
        found = self.all(key)
        return found[0] if found else None

    @property
    def name(self) -> str | None:
        return self.get("name")

    @property
    def vermagic(self) -> str | None:
        return self.get("vermagic")

    @property
    def release(self) -> str | None:
        """The kernel release the module was built for: vermagic's first word."""
        v = self.vermagic
        return v.split()[0] if v else None

    @property
    def depends(self) -> list[str]:
        return [d.replace("-", "_") for v in self.all("depends") for d in v.split(",") if d]

    @property
    def aliases(self) -> list[str]:
        return self.all("alias")

    @property
    def firmware(self) -> list[str]:
        return self.all("firmware")


def parse_modinfo(section: bytes) -> ModInfo:
    """key=value strings separated (and padded) by NULs, as the kernel's MODULE_INFO() lays them out."""
    fields = []
    for raw in section.split(b"\0"):
        if b"=" in raw:
            k, _, v = raw.decode("utf-8", "replace").partition("=")
            fields.append((k, v))
    return ModInfo(tuple(fields))


def read_modinfo_bytes(data: bytes, name: str = "kernel module") -> ModInfo:
    """The .modinfo of a module file's contents (compressed or not)."""
    elf = decompress_module(data, name)
    try:
        section = ELFFile(io.BytesIO(elf)).get_section_by_name(".modinfo")
    except ELFError as e:
        raise NetbootgenError(f"{name}: not an ELF object: {e}") from None
    if section is None:
        raise NetbootgenError(f"{name}: no .modinfo section (not a kernel module?)")
    return parse_modinfo(section.data())


def read_modinfo(path: Path) -> ModInfo:
    return read_modinfo_bytes(path.read_bytes(), str(path))


# A pci: modalias, field by field (pattern or value): vendor, device, subvendor, subdevice, class, subclass, prog-if.
PCI_ALIAS_RE = re.compile(r"^pci:v(?P<v>[^d]+)d(?P<d>.+?)sv(?P<sv>.+?)sd(?P<sd>.+?)bc(?P<bc>.+?)sc(?P<sc>.+?)"
                          r"i(?P<i>.+)\Z")
PCI_FIELDS = ("v", "d", "sv", "sd", "bc", "sc", "i")
PCI_ID_RE = re.compile(r"^(?P<v>[0-9a-fA-F]{4}):(?P<d>[0-9a-fA-F]{4})\Z")


@dataclass(frozen=True)
class PciDevice:
    """A PCI function as far as it is known; None fields are unknown and match only '*' in an alias."""

    vendor: int
    device: int
    subvendor: int | None = None
    subdevice: int | None = None
    pci_class: int | None = 0x020000  # Ethernet controller: what nic-for looks for

    @classmethod
    def parse(cls, pci_id: str) -> PciDevice:
        m = PCI_ID_RE.match(pci_id)
        if not m:
            raise NetbootgenError(f"{pci_id!r} is not a PCI id (vendor:device in hex, e.g. 1af4:1000)")
        return cls(int(m["v"], 16), int(m["d"], 16))

    @property
    def id(self) -> str:
        return f"{self.vendor:04x}:{self.device:04x}"

    def values(self) -> dict[str, str | None]:
        def hex8(x: int | None) -> str | None:
            return None if x is None else f"{x:08X}"

        c = self.pci_class
        return {"v": hex8(self.vendor), "d": hex8(self.device), "sv": hex8(self.subvendor),
                "sd": hex8(self.subdevice), "bc": None if c is None else f"{c >> 16:02X}",
                "sc": None if c is None else f"{(c >> 8) & 0xFF:02X}", "i": None if c is None else f"{c & 0xFF:02X}"}

    def matches(self, pattern: str) -> bool:
        """Whether a module's `pci:` alias pattern drives this device (fnmatch per field, as modprobe)."""
        m = PCI_ALIAS_RE.match(pattern)
        if not m:
            return False
        for key, value in self.values().items():
            want = m[key]
            if value is None:
                if want != "*":
                    return False
            elif not fnmatch.fnmatchcase(value, want.upper()):
                return False
        return True


def alias_matches(pattern: str, modalias: str) -> bool:
    """A full modalias string against an alias pattern (shell wildcards, case as written), as modprobe."""
    literal = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
    if not modalias.startswith(literal):  # cheap test first: 26000 patterns in a Debian kernel
        return False
    return literal == pattern or fnmatch.fnmatchcase(modalias, pattern)


@dataclass
class ModuleIndex:
    """What `lib/modules/VER` says about its modules, without reading any .ko until asked (modinfo())."""

    moddir: Path
    paths: dict[str, str] = field(default_factory=dict)  # module -> path relative to moddir
    dep_lines: dict[str, list[str]] = field(default_factory=dict)  # module -> modules.dep's dependencies
    aliases: list[tuple[str, str]] = field(default_factory=list)  # (pattern, module), modules.alias order
    builtin: set[str] = field(default_factory=set)
    builtin_info: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    _modinfo: dict[str, ModInfo] = field(default_factory=dict)

    @classmethod
    def load(cls, moddir: Path) -> ModuleIndex:
        dep = moddir / "modules.dep"
        if not dep.is_file():
            raise NetbootgenError(f"{moddir}: no modules.dep (run depmod -b on the kernel tree)")
        idx = cls(moddir)
        for line in dep.read_text().splitlines():
            path, sep, deps = line.partition(":")
            if sep:
                name = module_name(path)
                idx.paths[name] = path
                idx.dep_lines[name] = [module_name(d) for d in deps.split()]
        alias = moddir / "modules.alias"
        if alias.is_file():
            for line in alias.read_text().splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[0] == "alias":
                    idx.aliases.append((parts[1], parts[2].replace("-", "_")))
        builtin = moddir / "modules.builtin"
        if builtin.is_file():
            idx.builtin = {module_name(p) for p in builtin.read_text().split()}
        info = moddir / "modules.builtin.modinfo"
        if info.is_file():
            for raw in info.read_bytes().split(b"\0"):
                key, eq, value = raw.decode("utf-8", "replace").partition("=")
                mod, dot, k = key.partition(".")
                if eq and dot:
                    idx.builtin_info.setdefault(mod.replace("-", "_"), []).append((k, value))
            for mod, fields in idx.builtin_info.items():
                idx.aliases += [(v, mod) for k, v in fields if k == "alias"]
        return idx

    def has(self, name: str) -> bool:
        return name in self.paths or name in self.builtin

    def is_builtin(self, name: str) -> bool:
        return name in self.builtin and name not in self.paths

    def path(self, name: str) -> Path:
        return self.moddir / self.paths[name]

    def modinfo(self, name: str) -> ModInfo:
        """The module's .modinfo: read from its ELF file, or modules.builtin.modinfo for a built-in one."""
        if name not in self._modinfo:
            if name in self.paths:
                if not self.path(name).is_file():
                    raise NetbootgenError(f"{self.path(name)}: listed in modules.dep but missing")
                self._modinfo[name] = read_modinfo(self.path(name))
            else:
                self._modinfo[name] = ModInfo(tuple(self.builtin_info.get(name, [])))
        return self._modinfo[name]

    def closure(self, names: Iterable[str]) -> list[str]:
        """`names` and every module they depend on (their .modinfo `depends`), dependencies first: the
        order modprobe loads them in. Built-in and missing modules are left in: callers check has()."""
        order: list[str] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            if name in seen:
                return
            seen.add(name)
            if name in self.paths and self.path(name).is_file():
                for dep in self.modinfo(name).depends:
                    visit(dep)
            order.append(name)

        for n in names:
            visit(n)
        return order

    def drivers_for(self, modalias: str) -> list[str]:
        """Modules whose alias matches a full modalias string, in modules.alias order, each once."""
        return _unique(mod for pat, mod in self.aliases if alias_matches(pat, modalias))

    def pci_drivers(self, dev: PciDevice) -> list[str]:
        """Modules whose `pci:` aliases drive `dev`, in modules.alias order, each once."""
        return _unique(mod for pat, mod in self.aliases if pat.startswith("pci:") and dev.matches(pat))

    @cached_property
    def by_alias_prefix(self) -> dict[str, list[str]]:
        """Alias kind ('pci', 'virtio', 'fs', ...) -> the modules with such an alias."""
        kinds: dict[str, list[str]] = {}
        for pat, mod in self.aliases:
            kind = re.split(r"[:-]", pat, maxsplit=1)[0]
            if mod not in kinds.setdefault(kind, []):
                kinds[kind].append(mod)
        return kinds


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))
