"""The two ways a call to the coordination server fails, and the one reading of its error body.

`ControlError`: the server answered `{"error": {"code", "message"}}` (DESIGN section 2) with an
HTTP error status. `ControlUnreachable`: no usable answer at all (connect refused, TLS failure,
timeout). Every caller in the backend (poller, login, jobs, the local API's relay) reads the
error body through `error_of`, so a change of the wire shape is made here once.
"""

from __future__ import annotations

import json


class ControlError(Exception):
    """The server answered with an error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})")
        self.status, self.code, self.message = status, code, message


class ControlUnreachable(Exception):
    """No usable answer from the server."""


def error_of(status: int, body: bytes, reason: str = "") -> ControlError:
    """The server's `{"error": {code, message}}` answer as a ControlError; an answer without
    that shape (a proxy's page, a bare status) becomes code `http_error` with its text."""
    try:
        detail = json.loads(body)["error"]
        code, message = str(detail["code"]), str(detail["message"])
    except (ValueError, KeyError, TypeError):
        text = body[:200].decode(errors="replace")
        code, message = "http_error", text or reason or f"HTTP {status}"
    return ControlError(status, code, message)
