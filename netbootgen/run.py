"""The one place netbootgen starts subprocesses: `run` (wait for it), `spawn` (a child that keeps running) and
`spawn_console` (a child on a pseudo-terminal, for a guest's serial console).

Every command is logged to the `netbootgen.commands` logger before it starts (`netbootgen -v` shows them);
a failure always names the command.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import pexpect

from netbootgen.errors import CommandFailed, ToolMissing

PathLike = str | os.PathLike[str]
command_log = logging.getLogger("netbootgen.commands")

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


def _argv(cmd: Sequence[PathLike]) -> list[str]:
    argv = [os.fspath(a) for a in cmd]
    command_log.info("%s", shlex.join(argv))
    return argv


def _env(env: Mapping[str, str] | None) -> dict[str, str]:
    full_env = dict(os.environ)
    full_env.setdefault("LANG", "C.UTF-8")
    if env:
        full_env.update(env)
    return full_env


def _missing(argv: Sequence[str]) -> ToolMissing:
    name = os.path.basename(argv[0])
    pkg = PACKAGE_OF.get(name)
    return ToolMissing(name, f"install the Debian package {pkg}" if pkg else "")


def _tail(*outputs: str | bytes | None, lines: int = 25) -> str:
    text = "".join(o.decode(errors="replace") if isinstance(o, bytes) else o or "" for o in outputs)
    return "\n".join(text.strip().splitlines()[-lines:])


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
    argv = _argv(cmd)
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            cwd=cwd,
            env=_env(env),
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as e:
        raise _missing(argv) from e
    except subprocess.TimeoutExpired as e:
        raise CommandFailed(f"timed out after {timeout:.0f} s: {shlex.join(argv)}\n{_tail(e.stdout, e.stderr)}") from e
    if check and proc.returncode != 0:
        tail = _tail(proc.stdout, proc.stderr)
        raise CommandFailed(f"command failed with exit status {proc.returncode}: {shlex.join(argv)}\n{tail}")
    return proc


def spawn(
    cmd: Sequence[PathLike],
    *,
    output: IO[bytes] | IO[str] | int | None = None,
    cwd: PathLike | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `cmd` without a shell, stdin from /dev/null, stdout and stderr both to `output` (None: inherited)."""
    argv = _argv(cmd)
    stderr = None if output is None else subprocess.STDOUT
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output, stderr=stderr, cwd=cwd, env=_env(env))
    except FileNotFoundError as e:
        raise _missing(argv) from e


def spawn_console(cmd: Sequence[PathLike], *, log: IO[str] | None = None) -> pexpect.spawn:
    """Start `cmd` on a pseudo-terminal (200 columns, no echo) for pexpect; what it prints is copied to `log`."""
    argv = _argv(cmd)
    try:
        child = pexpect.spawn(argv[0], argv[1:], encoding="utf-8", codec_errors="replace", timeout=None,
                              echo=False, dimensions=(50, 200), env=_env(None))
    except pexpect.ExceptionPexpect as e:
        raise _missing(argv) from e
    child.logfile_read = log
    return child
