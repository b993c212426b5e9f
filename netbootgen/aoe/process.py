"""`netbootgen serve` as a child process: started, waited for until it is ready, stopped, its output kept.

The one way boot-test, the tests and the benchmark run the target beside a guest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from netbootgen.errors import NetbootgenError
from netbootgen.run import spawn

READY_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


class ServeProcess:
    """Run `netbootgen serve ARGS --ready-file LOG.ready`; stdout and stderr go to `log`.

    Use as a context manager (stops on exit) or call `stop()`; `output()` is what the target printed."""

    def __init__(self, args: Sequence[str], log: Path, *, ready_timeout: float = READY_TIMEOUT,
                 prefix: Sequence[str] = ()) -> None:
        """`prefix`: a command that execs the target in place of itself (e.g. `ip netns exec NS`), so that
        the child's pid, signals and exit status stay the target's."""
        self.log = log
        self.ready = log.with_name(log.name + ".ready")
        self.ready.unlink(missing_ok=True)
        self._logfile = log.open("wb")
        argv = [*prefix, sys.executable, "-m", "netbootgen.aoe", *args, "--ready-file", os.fspath(self.ready)]
        self.proc = spawn(argv, output=self._logfile)
        deadline = time.monotonic() + ready_timeout
        while not self.ready.exists():
            exited = self.proc.poll() is not None
            if exited or time.monotonic() > deadline:
                status = self.stop()
                how = f"exited with status {status}" if exited else f"was not ready within {ready_timeout:.0f} s"
                raise NetbootgenError(f"netbootgen serve {how}:\n{self.output()}")
            time.sleep(0.02)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (SIGKILL after `timeout` s); returns the exit status (negative: killed by that signal)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._logfile.close()
        return self.proc.returncode

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
