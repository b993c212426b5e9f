"""netbootgen.kernel.modinfo on small ELF objects made here with gcc (plain, xz, zstd, gzip) and on module
index folders written here: .modinfo fields, dependency order, and PCI ids resolved through alias patterns."""

from __future__ import annotations

import gzip
import lzma
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
import zstandard

from netbootgen.errors import NetbootgenError
from netbootgen.kernel.modinfo import (
    ModuleIndex,
    PciDevice,
    alias_matches,
    module_name,
    read_modinfo,
    read_modinfo_bytes,
)

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not found")


def fake_module(tmp: Path, name: str, fields: list[str]) -> Path:
    """An ELF object with `fields` ("key=value") in .modinfo, as MODULE_INFO() puts them (NUL-terminated)."""
    lines = [f'static const char f{i}[] __attribute__((section(".modinfo"), used, aligned(1))) = "{f}";'
             for i, f in enumerate(fields)]
    src = tmp / f"{name}.c"
    src.write_text("\n".join(lines) + "\nint placeholder_function(void) { return 0; }\n")
    obj = tmp / f"{name}.ko"
    subprocess.run(["gcc", "-c", "-o", obj, src], check=True)
    return obj


FIELDS = ["license=GPL", "alias=pci:v00001AF4d*sv*sd*bc*sc*i*", "depends=virtio,virtio_ring",
          "alias=pci:v00008086d000010D3sv*sd*bc*sc*i*", "firmware=demo/fw.bin", "name=demo_nic",
          "vermagic=6.1.0-57-amd64 SMP preempt mod_unload modversions "]


@needs_gcc
@pytest.mark.parametrize("compress", ["none", "xz", "zst", "gz"])
def test_modinfo_from_an_elf_object(tmp_path: Path, compress: str) -> None:
    obj = fake_module(tmp_path, "demo_nic", FIELDS)
    data = obj.read_bytes()
    packed = {"none": lambda b: b, "xz": lambda b: lzma.compress(b, format=lzma.FORMAT_XZ),
              "zst": lambda b: zstandard.ZstdCompressor().compress(b), "gz": gzip.compress}[compress](data)
    path = tmp_path / ("demo_nic.ko" + ("" if compress == "none" else f".{compress}"))
    path.write_bytes(packed)
    info = read_modinfo(path)
    assert info.name == "demo_nic"
    assert info.release == "6.1.0-57-amd64"
    assert info.depends == ["virtio", "virtio_ring"]
    assert info.aliases == ["pci:v00001AF4d*sv*sd*bc*sc*i*", "pci:v00008086d000010D3sv*sd*bc*sc*i*"]
    assert info.firmware == ["demo/fw.bin"]
    assert info.get("license") == "GPL"


def test_streamed_zstd_without_a_content_size(tmp_path: Path) -> None:
    """zstd's command line writes frames without the size in the header when it streams; still read."""
    if shutil.which("gcc") is None or shutil.which("zstd") is None:
        pytest.skip("gcc or zstd not found")
    obj = fake_module(tmp_path, "m", ["name=m", "vermagic=1.2.3-x SMP"])
    out = subprocess.run(["zstd", "-q", "-c"], input=obj.read_bytes(), capture_output=True, check=True).stdout
    assert read_modinfo_bytes(out).release == "1.2.3-x"


@needs_gcc
def test_not_a_module_is_a_clear_error(tmp_path: Path) -> None:
    src = tmp_path / "plain.c"
    src.write_text("int f(void) { return 1; }\n")
    subprocess.run(["gcc", "-c", "-o", tmp_path / "plain.o", src], check=True)
    with pytest.raises(NetbootgenError, match="no .modinfo section"):
        read_modinfo(tmp_path / "plain.o")
    with pytest.raises(NetbootgenError, match="not an ELF object"):
        read_modinfo_bytes(b"hello world, not ELF", "x.ko")
    with pytest.raises(NetbootgenError, match="cannot decompress"):
        read_modinfo_bytes(b"\xfd7zXZ\x00garbage", "x.ko.xz")


def test_module_names_as_the_kernel_writes_them() -> None:
    assert module_name("kernel/drivers/usb/common/usb-common.ko.zst") == "usb_common"
    assert module_name("kernel/fs/ext4/ext4.ko") == "ext4"
    assert module_name("aoe.ko.xz") == "aoe"


@pytest.mark.parametrize(
    ("pci_id", "pattern", "match"),
    [
        ("1af4:1000", "pci:v00001AF4d*sv*sd*bc*sc*i*", True),  # virtio_pci: any device of the vendor
        ("1af4:1000", "pci:v00001AF4d00001000sv*sd*bc*sc*i*", True),
        ("1af4:1000", "pci:v00001AF4d00001001sv*sd*bc*sc*i*", False),
        ("8086:10d3", "pci:v00008086d000010D3sv*sd*bc*sc*i*", True),  # case does not matter in the id
        ("8086:10d3", "pci:v00008086d000010D?sv*sd*bc*sc*i*", True),
        ("8086:10d3", "pci:v00008086d000010D[0-2]sv*sd*bc*sc*i*", False),
        ("8086:10d3", "pci:v*d*sv*sd*bc02sc00i*", True),  # by class: an Ethernet controller
        ("8086:10d3", "pci:v*d*sv*sd*bc0Csc03i30", False),  # a USB controller's class
        ("8086:10d3", "pci:v00008086d000010D3sv00001028sd*bc*sc*i*", False),  # subvendor unknown: no match
        ("8086:10d3", "usb:v0BDAp8153d*", False),
    ],
)
def test_pci_ids_through_alias_patterns(pci_id: str, pattern: str, match: bool) -> None:
    assert PciDevice.parse(pci_id).matches(pattern) is match


def test_full_modalias_against_wildcards() -> None:
    modalias = "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"
    assert alias_matches("pci:v00001AF4d*sv*sd*bc*sc*i*", modalias)
    assert not alias_matches("pci:v00008086d*sv*sd*bc*sc*i*", modalias)
    assert alias_matches("virtio:d00000001v*", "virtio:d00000001v00001AF4")
    assert alias_matches("fs-ext4", "fs-ext4") and not alias_matches("fs-ext4", "fs-ext2")


def test_bad_pci_id() -> None:
    with pytest.raises(NetbootgenError, match="not a PCI id"):
        PciDevice.parse("8086-10d3")


@needs_gcc
def test_index_loads_dependencies_first(tmp_path: Path) -> None:
    """A lib/modules/VER folder written here: modules.dep, modules.alias, modules.builtin(.modinfo)."""
    moddir = tmp_path / "lib/modules/9.9.9-test"
    kdir = moddir / "kernel"
    kdir.mkdir(parents=True)
    for name, deps in [("ring", ""), ("core", "ring"), ("nic", "core,ring,usb-common"), ("usb_common", "")]:
        obj = fake_module(tmp_path, name, [f"name={name}", f"depends={deps}", "vermagic=9.9.9-test SMP"])
        obj.rename(kdir / ("usb-common.ko" if name == "usb_common" else f"{name}.ko"))
    (moddir / "modules.dep").write_text(textwrap.dedent("""\
        kernel/ring.ko:
        kernel/core.ko: kernel/ring.ko
        kernel/nic.ko: kernel/core.ko kernel/ring.ko kernel/usb-common.ko
        kernel/usb-common.ko:
        """))
    (moddir / "modules.alias").write_text("# Aliases extracted from modules themselves.\n"
                                          "alias pci:v0000ABCDd00001234sv*sd*bc*sc*i* nic\n")
    (moddir / "modules.builtin").write_text("kernel/drivers/pci/pcie.ko\n")
    (moddir / "modules.builtin.modinfo").write_bytes(b"pcie.alias=pci:v*d*sv*sd*bc06sc04i*\0pcie.license=GPL\0")
    idx = ModuleIndex.load(moddir)
    assert idx.closure(["nic"]) == ["ring", "core", "usb_common", "nic"]
    assert idx.pci_drivers(PciDevice.parse("abcd:1234")) == ["nic"]
    assert idx.pci_drivers(PciDevice(0x1111, 0x2222, pci_class=0x060400)) == ["pcie"]
    assert idx.is_builtin("pcie") and not idx.is_builtin("nic") and idx.has("usb_common")
    assert idx.modinfo("pcie").get("license") == "GPL"
    assert idx.modinfo("core").release == "9.9.9-test"


def test_index_needs_modules_dep(tmp_path: Path) -> None:
    with pytest.raises(NetbootgenError, match="depmod"):
        ModuleIndex.load(tmp_path)
