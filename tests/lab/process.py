"""Background processes started inside lab hosts, tracked and stopped by PID.

Each process runs in its own session (so its PID is also its process-group id): stopping it
signals the whole group, which also catches helpers it forked, and a Ctrl-C in the terminal
reaches only the test runner, which then tears the lab down in order.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def kill_group(pid: int, sig: int) -> None:
    """Signal process group `pid`, falling back to the single process; ignore vanished ones."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    except PermissionError:
        pass


class Proc:
    """One background process inside a host, its PID and its log file."""

    def __init__(
        self,
        name: str,
        host: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.host = host
        self.argv = list(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
        self.pid: int = self._popen.pid

    @property
    def alive(self) -> bool:
        return self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit by itself; raise subprocess.TimeoutExpired on timeout."""
        return self._popen.wait(timeout)

    def signal(self, sig: int) -> None:
        """Send `sig` to the process only (not its group), e.g. SIGHUP to reload."""
        if self.alive:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        """First half of `stop`: SIGTERM the group, without waiting (lets teardown stop many
        processes in parallel)."""
        kill_group(self.pid, signal.SIGTERM)

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM the process group, SIGKILL it after `timeout`; return the exit status."""
        self.terminate()
        return self.finish(time.monotonic() + timeout)

    def finish(self, deadline: float) -> int:
        """Second half of `stop`: wait until `deadline`, then SIGKILL the group and reap."""
        try:
            code = self._popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            kill_group(self.pid, signal.SIGKILL)
            code = self._popen.wait(5.0)
        # Members of the group may outlive the leader (a forked helper): kill them too.
        kill_group(self.pid, signal.SIGKILL)
        return code

    def log_text(self, tail: int | None = None) -> str:
        """The process's combined stdout/stderr, or only its last `tail` lines."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        if tail is not None:
            text = "\n".join(text.splitlines()[-tail:])
        return text

    def __repr__(self) -> str:
        state = "alive" if self.alive else f"exited {self.returncode}"
        return f"<Proc {self.host}/{self.name} pid={self.pid} {state}>"


def stop_all(procs: Sequence[Proc], timeout: float = 5.0) -> None:
    """Stop many processes sharing one deadline: teardown takes `timeout` at most, not N times."""
    for p in procs:
        p.terminate()
    deadline = time.monotonic() + timeout
    for p in procs:
        p.finish(deadline)
