"""What an initrd holds, read in Python (no lsinitrd, no cpio): its archives and compression, dracut's module
list and arguments, the kernel modules with their vermagic (their .modinfo, read with pyelftools), the 95aoe
files and etc/cmdline.d; and whether it can boot: AoE, every module's dependencies and vermagic, and against a
profile's kernel check, each module of the AoE, NIC and root file system chains."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from netbootgen.errors import NetbootgenError
from netbootgen.kernel.check import ProfileReport
from netbootgen.kernel.modinfo import module_name, read_modinfo_bytes
from netbootgen.modules.cpio import Archive, Entry, read_initramfs

MODULE_RE = re.compile(r"^(?:usr/)?lib/modules/(?P<kver>[^/]+)/.+\.ko(?:\.xz|\.zst|\.gz)?\Z")
BUILTIN_RE = re.compile(r"^(?:usr/)?lib/modules/(?P<kver>[^/]+)/modules\.builtin\Z")
DRACUT_MODULES = ("usr/lib/dracut/modules.txt", "lib/dracut/modules.txt")
DRACUT_ARGS = ("usr/lib/dracut/build-parameter.txt", "lib/dracut/build-parameter.txt")
# The 95aoe files a working initrd holds: the cmdline hook (both flavours; dracut-ng keeps hooks in var/lib)
# and the aoe: parser it sources.
AOE_REQUIRED = (re.compile(r"^(?:usr/|var/)?lib/dracut/hooks/cmdline/\d+-parse-aoeroot\.sh\Z"),
                re.compile(r"^(?:usr/)?lib/aoe-lib\.sh\Z"))


@dataclass(frozen=True)
class KernelModule:
    name: str
    path: str
    vermagic: str
    depends: tuple[str, ...]

    @property
    def release(self) -> str:
        return self.vermagic.split()[0] if self.vermagic else ""


@dataclass
class InitrdReport:
    path: Path
    size: int
    archives: list[tuple[int, str, int, int]]  # (offset, compression, bytes in the image, entries)
    files: dict[str, Entry]  # the unpacked tree: later archives win, as when the kernel unpacks them
    kernel: str | None = None  # the version of usr/lib/modules/VER
    dracut_modules: list[str] = field(default_factory=list)
    dracut_args: str = ""
    modules: dict[str, KernelModule] = field(default_factory=dict)
    builtin: set[str] = field(default_factory=set)
    aoe_files: list[str] = field(default_factory=list)
    cmdline: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def has_module(self, name: str) -> bool:
        return name in self.modules or name in self.builtin

    def to_json(self) -> dict[str, object]:
        return {
            "path": str(self.path), "size": self.size, "kernel": self.kernel, "ok": self.ok,
            "archives": [{"offset": o, "compression": c, "bytes": b, "entries": n} for o, c, b, n in self.archives],
            "dracut_modules": self.dracut_modules, "dracut_arguments": self.dracut_args,
            "kernel_modules": [{"name": m.name, "path": m.path, "vermagic": m.vermagic, "depends": list(m.depends)}
                               for m in self.modules.values()],
            "aoe_files": self.aoe_files, "cmdline": self.cmdline, "problems": self.problems,
        }  # fmt: skip


def _text(e: Entry) -> str:
    return e.data.decode("utf-8", "replace")


def inspect_initrd(path: Path) -> InitrdReport:
    """Read `path` and check it on its own: 95aoe is there, AoE is (aoe.ko or built in), each kernel module's
    dependencies are there and every vermagic names the kernel of usr/lib/modules."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise NetbootgenError(f"cannot read {path}: {e.strerror}") from None
    try:
        archives: list[Archive] = read_initramfs(data)
    except NetbootgenError as e:
        raise NetbootgenError(f"{path}: {e.message}") from None
    files: dict[str, Entry] = {}
    for a in archives:
        for e in a.entries:
            files[e.name] = e
    r = InitrdReport(path, len(data), [(a.offset, a.compression, a.compressed_size, len(a.entries))
                                       for a in archives], files)
    kvers = set()
    for name, e in sorted(files.items()):
        if (m := MODULE_RE.match(name)) and e.is_file:
            kvers.add(m["kver"])
            info = read_modinfo_bytes(e.data, name)
            mod = KernelModule(module_name(name), name, info.vermagic or "", tuple(info.depends))
            r.modules[mod.name] = mod
        elif (m := BUILTIN_RE.match(name)) and e.is_file:
            kvers.add(m["kver"])
            r.builtin |= {module_name(x) for x in _text(e).split()}
        elif name.startswith("etc/cmdline.d/") and e.is_file:
            r.cmdline[name] = _text(e).strip()
        elif "aoe" in Path(name).name and not e.is_dir:
            r.aoe_files.append(name)
    for candidates, attr in ((DRACUT_MODULES, "dracut_modules"), (DRACUT_ARGS, "dracut_args")):
        for c in candidates:
            if c in files:
                text = _text(files[c])
                setattr(r, attr, text.split() if attr == "dracut_modules" else text.strip())
                break
    if len(kvers) > 1:
        r.problems.append(f"modules of several kernels: {', '.join(sorted(kvers))}")
    r.kernel = min(kvers) if kvers else None
    _check_self(r)
    return r


def _check_self(r: InitrdReport) -> None:
    for pattern in AOE_REQUIRED:
        if not any(pattern.match(n) for n in r.files):
            r.problems.append(f"95aoe: no file matching {pattern.pattern} (the initrd was not built with 95aoe)")
    if not r.has_module("aoe"):
        r.problems.append("AoE: no aoe.ko, and aoe is not built into the kernel (modules.builtin)")
    for m in r.modules.values():
        if m.release != r.kernel:
            r.problems.append(f"{m.path}: vermagic {m.vermagic!r} is not kernel {r.kernel}")
        missing = [d for d in m.depends if not r.has_module(d)]
        if missing:
            r.problems.append(f"{m.name} depends on {', '.join(missing)}, which the initrd lacks")


def check_against(r: InitrdReport, check: ProfileReport) -> list[str]:
    """Problems of initrd `r` for a profile whose kernel check is `check`: the kernel version, its compression
    (the kernel's CONFIG_RD_*), and each module of the AoE, NIC and root file system chains (built-in ones
    need nothing). Also added to r."""
    found = []
    if r.kernel is not None and r.kernel != check.kernel:
        found.append(f"the initrd's modules are for kernel {r.kernel}, profile {check.profile} boots {check.kernel}")
    for _, kind, _, _ in r.archives:
        if kind != "none" and check.unpacks is not None and kind not in check.unpacks:
            found.append(f"kernel {check.kernel} cannot unpack a {kind} initrd (see CONFIG_RD_* in its config)")
    for f in check.findings:
        missing = [m for m in f.modules if m not in f.builtin and not r.has_module(m)]
        if missing:
            found.append(f"profile {check.profile}: {f.what} needs {', '.join(missing)}, which the initrd lacks")
    r.problems += found
    return found
