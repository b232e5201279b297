"""Names what went wrong in words a user can act on (login errors, backend unreachable).

The backend and the coordination server answer with codes and messages written for logs; this
module sorts them into the few cases the login dialog and the notices must name: wrong
fingerprint, wrong password, server unreachable, backend not running, no permission.
"""

from __future__ import annotations

from dataclasses import dataclass

from pcloud.backend.localapi.client import (
    BackendError,
    BackendNotRunning,
    LocalAPIError,
    PermissionDenied,
)
from pcloud.gui.adminapi import CoordError
from pcloud.gui.format import BACKEND_START_HINT, GROUP_HINT


@dataclass(frozen=True)
class Problem:
    kind: str  # wrong_fingerprint | wrong_password | server_unreachable | backend_not_running |
    #            permission | invalid_link | bad_key | rate_limited | other
    title: str
    detail: str


def backend_not_running(detail: str = "") -> Problem:
    return Problem(
        "backend_not_running",
        "The PCloud backend is not running",
        f"Start it with: {BACKEND_START_HINT}" + (f"\n({detail})" if detail else ""),
    )


def no_permission(detail: str = "") -> Problem:
    return Problem(
        "permission",
        "You are not allowed to control PCloud",
        f"Add yourself to the pcloud group: {GROUP_HINT}, then log out and back in."
        + (f"\n({detail})" if detail else ""),
    )


def is_group_denial(exc: PermissionDenied) -> bool:
    """A 403 from the local API itself (socket rules), as opposed to one the coordination
    server sent through the backend (e.g. a wrong setup code): the client maps both to
    PermissionDenied, so the message is the only way to tell them apart."""
    text = exc.message.lower()
    return "permission denied" in text or "no permission to open" in text


def classify(exc: BaseException) -> Problem:
    if isinstance(exc, BackendNotRunning):
        return backend_not_running(exc.message)
    if isinstance(exc, PermissionDenied):
        if is_group_denial(exc):
            return no_permission(exc.message)
        return Problem("other", "The server refused", exc.message)
    if isinstance(exc, CoordError):
        if exc.status == 401:
            return Problem("wrong_password", "Wrong username or password", exc.message)
        if exc.status == 429:
            return Problem("rate_limited", "Too many attempts", exc.message)
        return Problem("other", "The server refused", exc.message)
    if isinstance(exc, BackendError):
        text = exc.message.lower()
        if exc.code == "pinning_failed":
            if "fingerprint mismatch" in text:
                return Problem(
                    "wrong_fingerprint",
                    "Wrong fingerprint",
                    "The server's certificate does not match the join link. Ask for "
                    "a fresh link; do not continue if you did not expect this.\n" + exc.message,
                )
            if "cannot reach" in text:
                return Problem("server_unreachable", "Server unreachable", exc.message)
            return Problem(
                "invalid_link",
                "Not a join link",
                "Paste the whole join link, https://HOST:PORT/#fp=sha256:…\n" + exc.message,
            )
        if exc.code == "server_unreachable" or exc.status in (502, 503, 504):
            return Problem("server_unreachable", "Server unreachable", exc.message)
        if exc.status == 401 or exc.code in ("unauthorized", "invalid_credentials"):
            if "key" in text:
                return Problem("bad_key", "Pre-auth key refused", exc.message)
            return Problem("wrong_password", "Wrong username or password", exc.message)
        if exc.status == 429:
            return Problem("rate_limited", "Too many attempts", exc.message)
        return Problem("other", "The backend refused", exc.message)
    if isinstance(exc, LocalAPIError):
        return Problem("other", "The backend refused", exc.message)
    return Problem("other", "Unexpected error", f"{type(exc).__name__}: {exc}")
