"""Calls to a coordination server on the network's pinned CA, for jobs and the local API.

`call()` is the plain request (status and JSON body back, errors as values, since a caller like
the GUI's admin pages wants the server's own error answer). `passthrough()` is the local API's
`POST /v1/coord`: an allow-list of the admin routes the GUI needs, relayed to the server this
backend is logged in to, so the GUI never opens TLS itself and never has to pin the CA again.
Bearer tokens travel only in the Authorization header and are never logged.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import httpx

from pcloud.backend.control.pinning import base_url, pinned_context
from pcloud.backend.errors import NotLoggedIn, OperationError

if TYPE_CHECKING:
    from pcloud.backend.local import LocalBackend

API = "/api/v1"

# (method, path pattern) the passthrough relays; anything else is refused before it leaves.
ALLOWED: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (m, re.compile(p))
    for m, p in (
        ("GET", r"/health"),
        ("POST", r"/setup"),
        ("POST", r"/login"),
        ("GET", r"/users"),
        ("POST", r"/users"),
        ("DELETE", r"/users/[a-z][a-z0-9._-]{0,62}"),
        ("GET", r"/auth-keys"),
        ("POST", r"/auth-keys"),
        ("DELETE", r"/auth-keys/[0-9a-f]{1,64}"),
        ("GET", r"/nodes"),
        ("PATCH", r"/nodes/\d{1,12}"),
        ("DELETE", r"/nodes/\d{1,12}"),
        ("GET", r"/install"),
    )
)


class Unreachable(OperationError):
    def __init__(self, message: str) -> None:
        super().__init__(message, code="server_unreachable", http_status=502)


class CoordRefused(OperationError):
    """The coordination server answered with an error (its status, code and message)."""

    def __init__(self, status: int, body: Any) -> None:
        detail = body.get("error", {}) if isinstance(body, dict) else {}
        code = str(detail.get("code", "error")) if isinstance(detail, dict) else "error"
        message = str(detail.get("message", f"HTTP {status}")) if isinstance(detail, dict) else ""
        super().__init__(message or f"HTTP {status}", code=code, http_status=status)
        self.status = status


async def call(
    ca_pem: str,
    server: str,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: Any = None,
    timeout: float = 30.0,
) -> tuple[int, Any]:
    """(status, JSON body or None) of `METHOD server/api/v1/path`; Unreachable if no answer."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with httpx.AsyncClient(verify=pinned_context(ca_pem), timeout=timeout) as client:
            answer = await client.request(
                method, f"{server}{API}{path}", headers=headers, json=body
            )
    except httpx.HTTPError as e:
        raise Unreachable(f"{server}: {type(e).__name__}: {e}") from None
    if not answer.content:
        return answer.status_code, None
    try:
        return answer.status_code, answer.json()
    except ValueError:
        return answer.status_code, {"error": {"code": "http_error", "message": answer.text[:200]}}


async def checked(
    ca_pem: str, server: str, method: str, path: str, *, token: str | None = None, body: Any = None
) -> Any:
    """`call()` that raises CoordRefused on an error answer."""
    status, answer = await call(ca_pem, server, method, path, token=token, body=body)
    if status >= 400:
        raise CoordRefused(status, answer)
    return answer


def allowed(method: str, path: str) -> bool:
    return any(m == method and p.fullmatch(path) for m, p in ALLOWED)


async def passthrough(
    backend: LocalBackend, method: str, path: str, *, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    """`POST /v1/coord`: relay one allowed admin call to the server we are logged in to."""
    method = method.upper()
    if not allowed(method, path):
        raise OperationError(
            f"{method} {path} is not one of the routes the backend relays "
            "(health, setup, login, users, auth-keys, nodes, install)",
            code="path_not_allowed",
            http_status=400,
        )
    ca = backend.store.load_ca()
    if backend.node is None or ca is None:
        raise NotLoggedIn()
    return await call(ca, base_url(backend.node.server_url), method, path, token=token, body=body)
