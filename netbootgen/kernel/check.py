"""Can this kernel boot these machines from AoE? Checked from the kernel's own files: its config, the module
index (netbootgen.kernel.modinfo) and each needed module's .modinfo, before any initrd is built.

For every profile: AoE (CONFIG_ATA_OVER_ETH built in, or aoe.ko with its dependencies), each NIC driver with
the chain it needs to appear (a virtio driver needs the virtio PCI transport, found through its `pci:` alias),
each NIC named by PCI id (nic_pci: the drivers come from the kernel's aliases), each machine's root file
system, and vermagic equal to the kernel release. What is missing names the Kconfig lines that fix it, taken
from the profile's config fragment."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from netbootgen.errors import NetbootgenError
from netbootgen.inventory import Inventory, Profile
from netbootgen.kconfig import FS_SYMBOLS, NIC_DRIVERS
from netbootgen.kernel.fetch import KernelTree, kernel_cache, local_kernel, resolve_version
from netbootgen.kernel.fragment import fragment_groups, profile_fstypes
from netbootgen.kernel.modinfo import ModuleIndex, PciDevice

VIRTIO_VENDOR = 0x1AF4
# Transitional (legacy) virtio PCI device ids -> virtio device id (virtio spec 4.1.2.1); modern ones are
# 0x1040 + the virtio device id.
VIRTIO_LEGACY = {0x1000: 1, 0x1001: 2, 0x1002: 5, 0x1003: 3, 0x1004: 8, 0x1005: 4, 0x1009: 9}
VIRTIO_PCI_SYMBOL = "CONFIG_VIRTIO_PCI"
# initrd compressor (as netbootgen.modules.cpio names them) -> the kernel option that unpacks it
RD_SYMBOLS = {"gzip": "CONFIG_RD_GZIP", "bzip2": "CONFIG_RD_BZIP2", "lzma": "CONFIG_RD_LZMA", "xz": "CONFIG_RD_XZ",
              "lzo": "CONFIG_RD_LZO", "lz4": "CONFIG_RD_LZ4", "zstd": "CONFIG_RD_ZSTD"}


class KernelCheckFailed(NetbootgenError):
    """A kernel lacks what its machines need to boot from AoE (exit status 1)."""


@dataclass(frozen=True)
class Finding:
    """One requirement of a profile: what, whether the kernel meets it, the modules it takes in load order
    (built-in ones included), and for a failure the reason and the Kconfig lines that fix it."""

    what: str
    ok: bool
    modules: tuple[str, ...] = ()
    builtin: tuple[str, ...] = ()  # those of `modules` built into the kernel
    problem: str = ""
    fix: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProfileReport:
    profile: str
    kernel: str
    findings: tuple[Finding, ...]
    # the initrd compressors the kernel unpacks; None when the tree has no boot/config-VER to tell
    unpacks: tuple[str, ...] | None = None

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)

    @property
    def pci_nic_modules(self) -> tuple[str, ...]:
        """The loadable modules (chains included) the NICs of nic_pci need: added to the initrd's --drivers."""
        mods = [m for f in self.findings if f.what.startswith("NIC ") and not f.what.startswith("NIC driver ")
                for m in f.modules if m not in f.builtin]
        return tuple(dict.fromkeys(mods))

    def errors(self) -> list[str]:
        out = []
        for f in self.findings:
            if not f.ok:
                msg = f"profile {self.profile} (kernel {self.kernel}): {f.what}: {f.problem}"
                if f.fix:
                    msg += "\n    the profile's kernel config fragment sets:\n"
                msg += "\n".join(f"      {x}" for x in f.fix)
                out.append(msg)
        return out

    def to_json(self) -> dict[str, object]:
        return {"profile": self.profile, "kernel": self.kernel, "ok": self.ok,
                "findings": [{"what": f.what, "ok": f.ok, "modules": list(f.modules), "builtin": list(f.builtin),
                              "problem": f.problem,
                              "fix": list(f.fix), "notes": list(f.notes)} for f in self.findings]}


@dataclass
class KernelFacts:
    """A kernel tree's config (boot/config-VER, if there) and module index."""

    tree: KernelTree
    index: ModuleIndex
    config: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, tree: KernelTree) -> KernelFacts:
        config: dict[str, str] = {}
        if tree.config.is_file():
            for line in tree.config.read_text().splitlines():
                sym, eq, val = line.partition("=")
                if eq and sym.startswith("CONFIG_"):
                    config[sym] = val
        return cls(tree, ModuleIndex.load(tree.moddir), config)

    def missing(self, modules: Iterable[str]) -> list[str]:
        """Those of `modules` that are neither built in nor a module file of this tree."""
        return [m for m in modules if not self.index.has(m) or
                (m in self.index.paths and not self.index.path(m).is_file())]

    def wrong_vermagic(self, modules: Iterable[str]) -> list[str]:
        bad = []
        for m in modules:
            if m in self.index.paths and self.index.path(m).is_file():
                rel = self.index.modinfo(m).release
                if rel != self.tree.version:
                    bad.append(f"{m} (vermagic {self.index.modinfo(m).vermagic!r})")
        return bad


def nic_chain(facts: KernelFacts, dev: PciDevice) -> tuple[list[str], str]:
    """The modules that drive PCI device `dev`, dependencies first (as modprobe loads them), and a problem
    ('' when found). A virtio device takes the virtio PCI transport, then the driver on the virtio bus."""
    idx = facts.index
    pci = idx.pci_drivers(dev)
    if not pci:
        return [], f"no module of kernel {facts.tree.version} has a pci: alias matching {dev.id}"
    if dev.vendor == VIRTIO_VENDOR and 0x1000 <= dev.device <= 0x107F:
        vid = dev.device - 0x1040 if dev.device >= 0x1040 else VIRTIO_LEGACY.get(dev.device)
        if vid is not None:
            on_bus = idx.drivers_for(f"virtio:d{vid:08X}v{VIRTIO_VENDOR:08X}")
            if not on_bus:
                return idx.closure(pci), f"no module drives virtio device {vid} (on the virtio bus)"
            return idx.closure(pci + on_bus), ""
    return idx.closure(pci), ""


def driver_chain(facts: KernelFacts, driver: str) -> tuple[list[str], str]:
    """The modules NIC driver `driver` needs, in load order, and a problem ('' when none). A virtio-bus driver
    needs a virtio transport driving one of its PCI ids; a PCI driver sits on the PCI core (built in)."""
    idx = facts.index
    if not idx.has(driver):
        return [], f"{driver}.ko is not in lib/modules/{facts.tree.version} and {driver} is not built in"
    aliases = idx.modinfo(driver).aliases if driver in idx.paths else \
        [p for p, m in idx.aliases if m == driver]
    virtio_ids = sorted({int(a[len("virtio:d"):len("virtio:d") + 8], 16) for a in aliases
                         if a.startswith("virtio:d") and a[len("virtio:d"):len("virtio:d") + 8].isalnum()})
    transports: list[str] = []
    for vid in virtio_ids:
        transports += idx.pci_drivers(PciDevice(VIRTIO_VENDOR, 0x1040 + vid, pci_class=None))
    if virtio_ids and not transports:
        return idx.closure([driver]), (f"{driver} drives virtio devices, and no module of kernel "
                                       f"{facts.tree.version} drives the virtio PCI device {VIRTIO_VENDOR:04x}:"
                                       f"{0x1040 + virtio_ids[0]:04x} (the virtio_pci transport)")
    return idx.closure(list(dict.fromkeys(transports)) + [driver]), ""


def _fragment_lines(p: Profile, fstypes: Iterable[str], symbols: Iterable[str]) -> tuple[str, ...]:
    values = {s: v for g in fragment_groups(p, tuple(fstypes)) for s, v in g.options}
    return tuple(f"{s}={values[s]}" for s in symbols if s in values)


def _finish(facts: KernelFacts, what: str, chain: list[str], problem: str, fix: tuple[str, ...]) -> Finding:
    """A requirement met by `chain` unless there is a problem, a missing module or a foreign vermagic."""
    if not problem:
        if gone := facts.missing(chain):
            problem = "missing module(s): " + ", ".join(gone)
        elif bad := facts.wrong_vermagic(chain):
            problem = f"built for another kernel than {facts.tree.version}: " + ", ".join(bad)
    notes = tuple(f"{m} needs firmware {fw}" for m in chain if m in facts.index.paths
                  and facts.index.path(m).is_file() for fw in facts.index.modinfo(m).firmware)
    builtin = tuple(m for m in chain if facts.index.is_builtin(m))
    return Finding(what, not problem, tuple(chain), builtin, problem, fix if problem else (), notes)


def check_profile(facts: KernelFacts, p: Profile, fstypes: Iterable[str] = ("ext4",),
                  compress: str | None = None) -> ProfileReport:
    """`compress`: the initrd's compressor, checked against the kernel's config when it has one."""
    fstypes = sorted(set(fstypes))
    given = dict(p.kconfig_symbols)
    findings = []
    unpacks = None
    if facts.config:
        unpacks = tuple(c for c, sym in RD_SYMBOLS.items() if facts.config.get(sym) == "y")
        need = ["CONFIG_BLK_DEV_INITRD", *([RD_SYMBOLS[compress]] if compress in RD_SYMBOLS else [])]
        unset = [sym for sym in need if facts.config.get(sym) != "y"]
        note = f"kernel {facts.tree.version} unpacks {', '.join(unpacks) or 'no compressed'} initrds"
        findings.append(Finding(f"initrd ({compress or 'any compressor'})", not unset, (), (),
                                f"{', '.join(unset)} not set in {facts.tree.config.name}" if unset else "",
                                tuple(f"{sym}=y" for sym in unset), (note,)))
    # AoE
    aoe_fix = _fragment_lines(p, fstypes, ("CONFIG_NET", "CONFIG_BLK_DEV", "CONFIG_ATA_OVER_ETH"))
    if facts.config.get("CONFIG_ATA_OVER_ETH") == "y" or facts.index.is_builtin("aoe"):
        findings.append(Finding("AoE", True, ("aoe",), ("aoe",)))
    elif not facts.index.has("aoe"):
        state = facts.config.get("CONFIG_ATA_OVER_ETH")
        why = f"CONFIG_ATA_OVER_ETH={state} in {facts.tree.config.name}" if state else \
            "CONFIG_ATA_OVER_ETH is not set"
        findings.append(Finding("AoE", False, (), (), f"aoe.ko is not in lib/modules/{facts.tree.version} and AoE is "
                                f"not built in ({why})", aoe_fix))
    else:
        findings.append(_finish(facts, "AoE", facts.index.closure(["aoe"]), "", aoe_fix))
    # NIC drivers named in the profile
    for drv, _ in p.nic_drivers:
        d = NIC_DRIVERS.get(drv)
        syms = (*d.under, d.symbol, *d.with_) if d else tuple(s for n, s in given.items() if n == drv)
        chain, problem = driver_chain(facts, drv)
        findings.append(_finish(facts, f"NIC driver {drv}", chain, problem, _fragment_lines(p, fstypes, syms)))
    # NICs named by PCI id
    for pci_id in p.nic_pci:
        dev = PciDevice.parse(pci_id)
        chain, problem = nic_chain(facts, dev)
        fix = ((f"{VIRTIO_PCI_SYMBOL}=m",) if dev.vendor == VIRTIO_VENDOR and not chain else
               (f"# the Kconfig symbol of the driver whose PCI id table holds {pci_id}",))
        findings.append(_finish(facts, f"NIC {pci_id}", chain, problem, fix))
    # root file systems
    for fs in fstypes:
        syms = FS_SYMBOLS.get(fs) or tuple(s for n, s in given.items() if n == fs)
        fix = _fragment_lines(p, fstypes, syms)
        if any(facts.config.get(s) == "y" for s in syms[:1]) or facts.index.is_builtin(fs):
            findings.append(Finding(f"root file system {fs}", True, (fs,), (fs,)))
            continue
        mods = facts.index.drivers_for(f"fs-{fs}") or ([fs] if facts.index.has(fs) else [])
        problem = "" if mods else (f"no module of kernel {facts.tree.version} provides fs-{fs} and it is not "
                                   "built in")
        findings.append(_finish(facts, f"root file system {fs}", facts.index.closure(mods), problem, fix))
    return ProfileReport(p.name, facts.tree.version, tuple(findings), unpacks)


@lru_cache(maxsize=8)
def _resolved(version: str, cache: Path) -> str:
    """resolve_version, once per process ("auto" asks apt-cache, or the cache)."""
    return resolve_version(version, cache)


def available_kernel(p: Profile, cache: Path) -> KernelTree | None:
    """The profile's kernel if it is here without a download (kernel_path, or the package in the cache)."""
    if p.kernel_path is not None:  # a tree that is there but broken is an error; one not here is left out
        return local_kernel(Path(p.kernel_path)) if Path(p.kernel_path).exists() else None
    try:
        version = _resolved(p.kernel_version, cache)
    except NetbootgenError:
        return None
    root = kernel_cache(cache, version)
    return KernelTree(version, root) if (root / ".complete").exists() else None


def check_inventory(inv: Inventory, kernels: dict[str, KernelTree],
                    progress: Callable[[str], None] = lambda msg: None,
                    compress: str | None = None) -> list[ProfileReport]:
    """Check each profile named in `kernels` against its kernel (the machines' file systems included;
    `compress`: the initrd's compressor, if known)."""
    fstypes = profile_fstypes(inv)
    facts: dict[Path, KernelFacts] = {}
    reports = []
    for name, tree in kernels.items():
        progress(f"profile {name}: checking kernel {tree.version} (config, modules, .modinfo) ...")
        if tree.moddir not in facts:
            facts[tree.moddir] = KernelFacts.load(tree)
        reports.append(check_profile(facts[tree.moddir], inv.profiles[name], fstypes.get(name, {"ext4"}),
                                     compress))
    return reports


def require_bootable(reports: Iterable[ProfileReport]) -> None:
    """Raise KernelCheckFailed listing every problem of every report."""
    errors = [e for r in reports for e in r.errors()]
    if errors:
        raise KernelCheckFailed("kernel check failed: the kernel cannot boot these machines from AoE\n"
                                + "\n".join(errors))
