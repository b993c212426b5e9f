"""The one place netbootgen starts subprocesses."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from netbootgen.errors import CommandFailed, ToolMissing

PathLike = str | os.PathLike[str]

# Debian package that provides each tool we run, for the "not found" hint.
PACKAGE_OF = {
    "dracut": "dracut-core",
    "qemu-system-x86_64": "qemu-system-x86",
    "mke2fs": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "depmod": "kmod",
    "dpkg": "dpkg",
    "apt-get": "apt",
    "vblade": "vblade",
    "shellcheck": "shellcheck",
    "systemd-analyze": "systemd",
}


def find_binary(*names: str) -> Path | None:
    """Return the first of `names` found on PATH (or in /usr/sbin, /sbin), else None."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    for name in names:
        found = shutil.which(name, path=path)
        if found:
            return Path(found)
    return None


def need_binary(name: str) -> Path:
    found = find_binary(name)
    if found is None:
        pkg = PACKAGE_OF.get(name)
        raise ToolMissing(name, f"install the Debian package {pkg}" if pkg else "")
    return found


def run(
    cmd: Sequence[PathLike],
    *,
    check: bool = True,
    capture: bool = False,
    cwd: PathLike | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `cmd` without a shell, stdin from /dev/null.

    With `capture`, stdout and stderr are returned; otherwise they are still captured so that a failure can
    show the tail of the output. A non-zero exit raises CommandFailed naming the command.
    """
    argv = [os.fspath(a) for a in cmd]
    full_env = dict(os.environ)
    full_env.setdefault("LANG", "C.UTF-8")
    if env:
        full_env.update(env)
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            cwd=cwd,
            env=full_env,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as e:
        name = os.path.basename(argv[0])
        pkg = PACKAGE_OF.get(name)
        raise ToolMissing(name, f"install the Debian package {pkg}" if pkg else "") from e
    except subprocess.TimeoutExpired as e:
        raise CommandFailed(f"timed out after {timeout:.0f} s: {shlex.join(argv)}") from e
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise CommandFailed(f"command failed with exit status {proc.returncode}: {shlex.join(argv)}\n{tail}")
    return proc
