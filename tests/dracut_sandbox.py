"""The sandbox the 95aoe script tests run in (test_dracut_module, test_dracut_module_setup, test_dracut_root_mount).

The scripts run under dash (bash for module-setup.sh) with 99base's dracut-lib.sh sourced, so getarg is dracut's:
it parses the command line with dracut-getarg (dracut-util), and a later argument wins over an earlier one. Only
getcmdline (which reads the host's /proc/cmdline) and the fatal or waiting helpers (die, wait_for_dev) are
replaced. Scripts that touch fixed paths (/sbin/initqueue, /dev/etherd, /sys/class/net, /run/initramfs,
/sys/dev/block) run in a private mount namespace whose bind mounts put temporary directories over those paths;
the host is never written to (the dracut_host_untouched fixture checks it after each module's tests).
The fixtures are registered in conftest.py.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from netbootgen.generate import render_inventory
from netbootgen.inventory import load_inventory
from netbootgen.output import write_tree

DRACUT_BASE = Path("/usr/lib/dracut/modules.d/99base")
DRACUT_UTIL = Path("/usr/lib/dracut/dracut-util")  # dracut-getarg and dracut-getargs in the initrd
# what the sandboxed scripts would create if a bind mount were missing
HOST_PATHS = ["/sbin/initqueue", "/sbin/aoeroot", "/dev/etherd", "/run/initramfs", "/lib/aoe-lib.sh",
              "/lib/dracut/hooks", "/var/log/log"]


def tool(name: str) -> str:
    """The path of `name`, or skip (the root conftest.py turns the skip into a failure in CI)."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        pytest.skip(f"{name} not installed")
    return path


def need_dracut() -> None:
    if not (DRACUT_BASE / "dracut-lib.sh").is_file() or not DRACUT_UTIL.is_file():
        pytest.skip(f"dracut not installed ({DRACUT_BASE}/dracut-lib.sh, {DRACUT_UTIL})")


def need_namespace() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private mount namespace")


@pytest.fixture(scope="module")
def dracut_host_untouched() -> Iterator[None]:
    before = {p: os.path.lexists(p) for p in HOST_PATHS}
    yield
    assert not os.path.lexists("/sbin/initqueue"), "a test left /sbin/initqueue on the host"
    assert {p: os.path.lexists(p) for p in HOST_PATHS} == before, "a test changed the host"


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("render")
    write_tree(out, render_inventory(load_inventory(None)))
    return out / "dracut" / "95aoe"


# Sourced first by every harness: dracut's helpers as the initrd has them, then the initrd's /lib/aoe-lib.sh.
PRELUDE = """\
PREFIX=/nonexistent  # else dracut-lib.sh creates /run/initramfs and links /var/log on the host
. "$DRACUT_BASE/dracut-dev-lib.sh"
. "$DRACUT_BASE/dracut-lib.sh"
unset PREFIX
# dracut's getarg rebuilds $CMDLINE from /etc/cmdline, /etc/cmdline.d/*.conf and /proc/cmdline on every call
# (a preset CMDLINE is ignored) and hands it to dracut-getarg: the test's command line replaces just that read.
getcmdline() { printf '%s' "$TEST_CMDLINE"; }
die() { echo "DIE: $*"; exit 1; }
wait_for_dev() { echo "WAIT_FOR_DEV $*"; }
. "$AOE_LIB"
"""

STUB = """\
#!/bin/sh
# one write per call: the cmdline hook's modprobe runs in the background, beside the initqueue stub
line=${0##*/}
for arg in "$@"; do line="$line [$arg]"; done
printf '%s\\n' "$line" >> "$STUB_LOG"
"""


@dataclass
class Sandbox:
    """Temporary stand-ins for the fixed paths the scripts use, bound over them in a private mount namespace.

    sbin covers /usr/sbin (and so /sbin): initqueue, ip and modprobe stubs that log their arguments to `log`
    (one line per call, each argument in brackets), and dracut-getarg (aoeroot.sh sets its own PATH)."""

    top: Path
    binds: dict[str, Path] = field(init=False)

    def __post_init__(self) -> None:
        for name in ("sbin", "bin", "dev/etherd", "run", "net", "module", "block"):
            (self.top / name).mkdir(parents=True)
        for d in (self.sbin, self.bin):
            for name in ("dracut-getarg", "dracut-getargs"):
                (d / name).symlink_to(DRACUT_UTIL)
        for name in ("initqueue", "ip", "modprobe"):
            (self.sbin / name).write_text(STUB)
            (self.sbin / name).chmod(0o755)
        self.log.write_text("")
        (self.dev / "kmsg").write_text("")
        (self.dev / "null").write_text("")  # a mount point for the host's /dev/null
        self.uptime.write_text("200.57 400.12\n")
        self.binds = {"/usr/sbin": self.sbin, "/dev": self.dev, "/run": self.top / "run",
                      "/sys/class/net": self.top / "net", "/sys/module": self.top / "module",
                      "/sys/dev/block": self.top / "block", "/proc/uptime": self.uptime}

    @property
    def sbin(self) -> Path:
        return self.top / "sbin"

    @property
    def bin(self) -> Path:
        """dracut-getarg for the scripts run outside the namespace."""
        return self.top / "bin"

    @property
    def dev(self) -> Path:
        return self.top / "dev"

    @property
    def state(self) -> Path:
        """aoeroot's /run/initramfs/aoe."""
        return self.top / "run" / "initramfs" / "aoe"

    @property
    def log(self) -> Path:
        return self.top / "calls.log"

    @property
    def uptime(self) -> Path:
        return self.top / "uptime"

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()

    def add_link(self, name: str, mac: str, *, iftype: int = 1, up: bool = False, carrier: bool = False) -> None:
        """/sys/class/net/NAME as aoeroot reads it: type, address, flags (IFF_UP = 1), operstate."""
        d = self.top / "net" / name
        d.mkdir()
        (d / "type").write_text(f"{iftype}\n")
        (d / "address").write_text(f"{mac}\n")
        (d / "flags").write_text("0x1003\n" if up else "0x1002\n")
        (d / "operstate").write_text("up\n" if carrier else "down\n")

    def run(self, argv: list[str], env: dict[str, str], namespace: bool = True) -> subprocess.CompletedProcess[str]:
        env = {"PATH": f"{self.bin}:/usr/bin:/bin:/usr/sbin:/sbin", "STUB_LOG": str(self.log),
               "DRACUT_BASE": str(DRACUT_BASE), **env}
        if not namespace:
            return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
        need_namespace()
        q = shlex.quote
        mounts = [f"mount --bind /dev/null {q(str(self.dev / 'null'))}"]  # before /dev is covered
        mounts += [f"mount --{'rbind' if dst == '/dev' else 'bind'} {q(str(src))} {dst}"
                   for dst, src in self.binds.items()]
        setup = " && ".join(mounts) + ' || { echo "SANDBOX SETUP FAILED" >&2; exit 97; }; exec "$@"'
        proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", setup, "sh", *argv],
                              capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode != 97, proc.stderr
        return proc


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    need_dracut()
    return Sandbox(tmp_path / "sandbox")


# parse-aoeroot.sh, the cmdline hook, sourced by dracut with root, netroot, fstype and rflags preset
HOOK_HARNESS = """\
. "$PRELUDE"
[ -n "$TEST_HOOKDIR" ] && hookdir=$TEST_HOOKDIR
root=; netroot=; rflags=; fstype=auto; rootok=
. "$HOOK"
wait  # for what the hook started in the background
echo "root=$root"
echo "rootok=$rootok"
echo "fstype=$fstype"
echo "rflags=$rflags"
echo "leftover=$aoedev$aoe_dev$aoe_fstype$aoe_flags"
"""


def run_hook(module_dir: Path, sandbox: Sandbox, cmdline: str, hookdir: Path | None = None, **env_: str) -> str:
    """The hook's variables and its initqueue and wait_for_dev calls, then what it wrote to /dev/kmsg; `env_`:
    more of the hook's environment (DRACUT_SYSTEMD=1 as dracut-cmdline.service sets it)."""
    prelude, harness = sandbox.top / "prelude.sh", sandbox.top / "hook-harness.sh"
    prelude.write_text(PRELUDE)
    harness.write_text(HOOK_HARNESS)
    env = {"TEST_CMDLINE": cmdline, "PRELUDE": str(prelude), "AOE_LIB": str(module_dir / "aoe-lib.sh"),
           "HOOK": str(module_dir / "parse-aoeroot.sh"), "TEST_HOOKDIR": str(hookdir or ""), **env_}
    proc = sandbox.run([tool("dash"), str(harness)], env)
    calls = [f"INITQUEUE {c.removeprefix('initqueue ')}" for c in sandbox.calls() if c.startswith("initqueue ")]
    return "\n".join([proc.stdout + proc.stderr, *calls, (sandbox.dev / "kmsg").read_text()])
