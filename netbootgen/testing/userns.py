"""A rootless tap: a user namespace with its own network namespace, where an unprivileged user may create a
tap device, open an AF_PACKET socket on it and run QEMU on it.

Why: QEMU's unix-socket netdevs (`-netdev dgram`, `stream`) carry no virtio-net header, so QEMU clears
VIRTIO_NET_F_CSUM for the guest's NIC and the guest's virtio_net loses scatter-gather (NETIF_F_SG): every AoE
WRITE of a jumbo frame is then copied into one linear buffer before it is sent. Measured with the tap itself
and `-device virtio-net-pci,csum=off`: writes at MTU 9000 fall from ~135 to ~55 MB/s, the figure of the unix
sockets. A tap keeps the header, and inside a user namespace it needs no root.

`UserNetns` starts `unshare --user --map-root-user --net` holding the namespaces, as the caller or (a root
caller only) as another `user`; `prefix` is the command that runs a program inside them as that user
(`setpriv` + `nsenter`), usable as ServeProcess's prefix and before a QEMU argv. Inside, the namespace's root
has the capabilities a tap and an AF_PACKET socket need, on that network only; outside it keeps the user's own
rights (an unprivileged user must be able to read the programs it starts). close() kills the holder; the
namespaces, with the tap, go with their last process.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from collections.abc import Sequence
from types import TracebackType

from netbootgen.errors import NetbootgenError
from netbootgen.run import PathLike, need_binary, run, spawn

START_TIMEOUT = 10.0


class UserNetns:
    """A user namespace with its own network namespace, owned by the caller or `user`. A context manager."""

    def __init__(self, user: str | None = None) -> None:
        for tool in ("unshare", "nsenter", "setpriv", "ip"):
            need_binary(tool)
        if user is not None:
            if os.geteuid() != 0:
                raise NetbootgenError(f"UserNetns(user={user!r}) needs root to switch users")
            entry = pwd.getpwnam(user)
            self.uid, self.gid = entry.pw_uid, entry.pw_gid
            self._as_user = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups"]
        else:
            self.uid, self.gid = os.geteuid(), os.getegid()
            self._as_user = []
        self._holder = spawn([*self._as_user, "unshare", "--user", "--map-root-user", "--net", "--",
                              "sleep", "infinity"], output=subprocess.DEVNULL)
        own = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                ready = (os.readlink(f"/proc/{self.pid}/ns/net") != own
                         and open(f"/proc/{self.pid}/uid_map").read().strip() != "")
            except OSError:
                ready = False
            if ready:
                break
            if self._holder.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise NetbootgenError("unshare --user --net did not start: are unprivileged user namespaces "
                                      "allowed here (sysctl user.max_user_namespaces)?")
            time.sleep(0.01)

    @property
    def pid(self) -> int:
        return self._holder.pid

    @property
    def prefix(self) -> list[str]:
        """Run what follows inside the namespaces, as the namespace's root (the unprivileged user outside)."""
        return [*self._as_user, "nsenter", f"--target={self.pid}", "--user", "--net", "--preserve-credentials",
                "--"]

    def run(self, cmd: Sequence[PathLike]) -> str:
        return run([*self.prefix, *cmd]).stdout

    def add_tap(self, name: str, mtu: int) -> None:
        """A tap device `name` with `mtu`, up, for QEMU's `-netdev tap,ifname=NAME` inside the namespace."""
        self.run(["ip", "link", "set", "lo", "up"])
        self.run(["ip", "tuntap", "add", "dev", name, "mode", "tap"])
        self.run(["ip", "link", "set", name, "mtu", str(mtu), "up"])

    def close(self) -> None:
        if self._holder.poll() is None:
            self._holder.kill()
        self._holder.wait()

    def __enter__(self) -> UserNetns:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
