"""How the supervisors and the K3s driver run programs: one small seam so tests can record or
replace the calls.

`SubprocessRunner` runs real programs (the real `k3s`, or the stand-in `k3s` wrapper in tests
and the lab, which is just another binary path). Unit tests swap in a recording runner and check
the exact argv the driver builds. Logged command lines are redacted: a token must never reach a
log even if a caller passes one on the command line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

_SECRET_FLAGS = ("--token", "-t", "--agent-token", "--etcd-token", "--etcd-s3-secret-key")


class RunError(RuntimeError):
    """A program could not be started or timed out."""


@dataclass
class Result:
    """What a finished program left: exit code and its output, decoded."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def redact(argv: Sequence[str]) -> list[str]:
    """argv with secret flag values replaced, for logs and error messages."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append("***")
            hide_next = False
            continue
        name, eq, _ = arg.partition("=")
        if name in _SECRET_FLAGS:
            if eq:
                out.append(f"{name}=***")
            else:
                out.append(arg)
                hide_next = True
        else:
            out.append(arg)
    return out


class Runner(Protocol):
    """Runs one program to completion, or starts one that keeps running."""

    async def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> Result: ...

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log_path: str,
    ) -> int: ...


class SubprocessRunner:
    """The real runner: asyncio subprocesses for calls, a detached session for daemons."""

    # Where a daemon's stdout goes: the log file, or nowhere for daemons that print secrets
    # there (pcloud-server prints the setup code on stdout for the person who started it).
    stdout_to_log = True

    async def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> Result:
        shown = " ".join(redact(argv))
        log.debug("run: %s", shown)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, **(env or {})},
            )
        except OSError as exc:
            raise RunError(f"cannot run {shown}: {exc}") from None
        try:
            async with asyncio.timeout(timeout):
                out, err = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RunError(f"{shown} did not finish within {timeout:.0f}s") from None
        code = proc.returncode if proc.returncode is not None else -1
        return Result(list(argv), code, out.decode(errors="replace"), err.decode(errors="replace"))

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log_path: str,
    ) -> int:
        """Start a daemon in its own session (it outlives the backend) logging to a file."""
        log.info("start: %s", " ".join(redact(argv)))
        # A file, never a pipe back to us: the daemon outlives the backend.
        logfd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=logfd if self.stdout_to_log else subprocess.DEVNULL,
                stderr=logfd,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        except OSError as exc:
            raise RunError(f"cannot start {argv[0]}: {exc}") from None
        finally:
            os.close(logfd)
        _started.append(popen)
        return popen.pid


# Popen objects of daemons we started, kept referenced so Python neither warns about them nor
# reaps them behind the supervisor's back (it reaps with os.waitpid itself).
_started: list[subprocess.Popen[bytes]] = []
