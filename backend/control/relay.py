"""The local API's `POST /v1/coord`: the admin routes the GUI needs, relayed to the server this
backend is logged in to, so the GUI never opens TLS itself and never has to pin the CA again.

Only the allow-list below leaves the machine; the server's answer (error answers included) is
handed back as it came. Bearer tokens travel only in the Authorization header, never logged.
"""

from __future__ import annotations

import re
from typing import Any

from pcloud.backend.control.client import ControlClient

# (method, path pattern) the relay passes on; anything else is refused before it leaves.
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
ALLOWED_TEXT = "health, setup, login, users, auth-keys, nodes, install"


class NotRelayed(ValueError):
    """The route is not one the backend relays."""


def allowed(method: str, path: str) -> bool:
    return any(m == method and p.fullmatch(path) for m, p in ALLOWED)


def check(method: str, path: str) -> str:
    """The method, upper-cased, of a call the backend relays; NotRelayed for any other."""
    method = method.upper()
    if not allowed(method, path):
        raise NotRelayed(
            f"{method} {path} is not one of the routes the backend relays ({ALLOWED_TEXT})"
        )
    return method


async def relay(
    ca_pem: str, server: str, method: str, path: str, *, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    """(status, JSON body or None) of one allowed call; NotRelayed for any other route."""
    method = check(method, path)
    async with ControlClient.pinned(ca_pem, timeout=30.0) as client:
        return await client.request(method, server, path, token=token, body=body)
