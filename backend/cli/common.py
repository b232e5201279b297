"""What every subcommand shares: the client, one-line errors, exit codes.

Errors print as `pcloud: <what is wrong and what to do>` on stderr with exit code 1; `main`
catches the local-API exceptions so subcommands only deal with their own cases.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable

from pcloud.backend.localapi.client import (
    BackendError,
    BackendNotRunning,
    LocalAPIError,
    LocalClient,
    PermissionDenied,
)
from pcloud.backend.localapi.schemas import Status

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace, LocalClient], Awaitable[int]]


class CliError(Exception):
    """A problem the user can fix; the message says how."""


def fail(message: str) -> int:
    sys.stderr.write(f"pcloud: {message}\n")
    return EXIT_ERROR


def explain(exc: LocalAPIError) -> str:
    if isinstance(exc, BackendNotRunning):
        return f"{exc.message}; start it with: sudo systemctl start pcloud-backend"
    if isinstance(exc, PermissionDenied):
        msg = exc.message
        if "usermod" not in msg:
            msg += "; to allow your user: sudo usermod -aG pcloud $USER (then log in again)"
        return msg
    if isinstance(exc, BackendError):
        return exc.message
    return str(exc)


def require_running(status: Status) -> None:
    """Commands that need the tunnel up say why they cannot go on."""
    if status.state == "Running":
        return
    hints = {
        "NeedsLogin": "not logged in: run `pcloud login JOIN-LINK`",
        "Stopped": "PCloud is stopped: run `pcloud up`",
        "Starting": "PCloud is still starting",
        "Error": f"PCloud has a problem: {status.error}",
    }
    raise CliError(hints.get(status.state, f"PCloud is {status.state}"))
