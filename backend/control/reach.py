"""Why a coordination server could not be reached, in words a person can act on.

httpx's exceptions name the failure by class (`ConnectError`, `ReadTimeout`) and often carry an
empty message; these sentences say what it means and what to check instead.
"""

from __future__ import annotations

import httpx


def describe(exc: httpx.HTTPError, url: str) -> str:
    """One line: `url`, what went wrong, and what to check."""
    if isinstance(exc, httpx.ConnectTimeout):
        return (
            f"cannot reach {url}: no answer while connecting (the machine may be off, a "
            "firewall may drop the packets, or pcloud-server is hung)"
        )
    if isinstance(exc, httpx.TimeoutException):
        return (
            f"{url} accepted the connection but did not answer in time (the coordination "
            "server may be hung or overloaded)"
        )
    if isinstance(exc, httpx.ConnectError):
        detail = str(exc) or "connection failed"
        return (
            f"cannot reach {url} ({detail}): is pcloud-server running there, and are the "
            "address and port of the join link right?"
        )
    detail = str(exc) or type(exc).__name__
    return f"{url}: {detail}"
