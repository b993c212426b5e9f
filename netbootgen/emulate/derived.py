"""Files an emulated boot uses in place of an artefact: made from it once, kept in the cache under its digest.

Under TCG the guest's CPU is about 50 times slower than the host's, so work the guest would do on every boot,
and whose result does not depend on the boot, is done once on the host instead: the kernel's ELF out of the
bzImage (emulate.pvh: no decompressor to run) and the initrd with its archives decompressed (`raw_initrd`: the
kernel unpacks the same cpio archives, without decompressing them). The artefacts themselves are not changed:
PXE boots load the built files."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from netbootgen.cache import KEY, prune
from netbootgen.errors import NetbootgenError
from netbootgen.modules.cpio import uncompressed_initramfs
from netbootgen.output import write_file

RAW_INITRD_KEEP = 6  # uncompressed initrds kept (20-32 MB each for the example), the most recently used


def derived(source: Path, folder: Path, name: str, make: Callable[[bytes], bytes | None], keep: int) -> Path | None:
    """`make(source's bytes)`, written once to `folder`/`name` with KEY replaced by the source's digest (the
    `keep` most recently used of that name are kept). None when `make` gives None, which is remembered
    (`name`.none) so that it is not tried again for the same source."""
    data = source.read_bytes()
    out = folder / name.replace(KEY, hashlib.sha256(data).hexdigest()[:16])
    none = out.with_name(out.name + ".none")
    if out.exists():
        out.touch()  # used: pruning keeps it
        return out
    if none.exists():
        return None
    made = make(data)
    if made is None:
        write_file(none, b"", 0o644)
        return None
    write_file(out, made, 0o644)
    prune(folder, name, keep)
    return out


def _uncompressed(data: bytes) -> bytes | None:
    try:
        raw = uncompressed_initramfs(data)
    except NetbootgenError:
        return None  # not an initramfs this reader knows: the guest gets the file itself
    return None if raw is data else raw


def raw_initrd(initrd: Path, cache: Path) -> Path:
    """`initrd` with every compressed archive decompressed (kept under `cache`/initrd/raw), or `initrd` itself
    when it holds nothing compressed or cannot be read. Under TCG the kernel takes about 1 s to unpack an
    11 MB zstd initrd; the host, 0.1 s once."""
    return derived(initrd, cache / "initrd" / "raw", f"initrd-{KEY}.cpio", _uncompressed, RAW_INITRD_KEEP) or initrd
