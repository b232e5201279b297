"""Request dependencies: the shared state, and who the bearer token says the caller is."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..accounts import Accounts, Caller
from ..errors import forbidden, unauthorized
from ..model import NodeRec
from ..state import State

_bearer = HTTPBearer(auto_error=False, description="a user token, node token or auth key")


async def get_state(request: Request) -> State:
    state: State = request.app.state.pcloud
    return state


async def get_accounts(request: Request) -> Accounts:
    accounts: Accounts = request.app.state.accounts
    return accounts


StateDep = Annotated[State, Depends(get_state)]
AccountsDep = Annotated[Accounts, Depends(get_accounts)]


async def bearer(
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    if creds is None or not creds.credentials:
        raise unauthorized("missing Authorization: Bearer token")
    return creds.credentials


BearerDep = Annotated[str, Depends(bearer)]


async def local_or_user(
    request: Request,
    accounts: AccountsDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    if getattr(request.app.state, "local_admin", False):
        # The admin socket in the state dir: reachable only by root on the server itself.
        return Caller("local-admin", admin=True)
    if creds is None or not creds.credentials:
        raise unauthorized("missing Authorization: Bearer token")
    return accounts.caller(creds.credentials)


CurrentUser = Annotated[Caller, Depends(local_or_user)]


async def admin_user(caller: CurrentUser) -> Caller:
    if not caller.admin:
        raise forbidden(f"user {caller.username!r} is not an admin")
    return caller


AdminUser = Annotated[Caller, Depends(admin_user)]


async def current_node(accounts: AccountsDep, token: BearerDep) -> NodeRec:
    return accounts.node_for_token(token)


CurrentNode = Annotated[NodeRec, Depends(current_node)]


def client_ip(request: Request) -> str:
    """The caller's address: the TCP peer, or the last X-Forwarded-For hop when the peer is a
    configured reverse proxy (`--trusted-proxy`; none by default, and uvicorn's own header
    rewriting is off), so no client picks its own address for the login limiter."""
    peer = request.client.host if request.client else "unknown"
    proxies = request.app.state.pcloud.settings.trusted_proxies
    if proxies and _trusted(peer, proxies):
        hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",")]
        for hop in reversed(hops):
            try:
                ip = ipaddress.ip_address(hop)
            except ValueError:
                break
            if not _trusted(str(ip), proxies):
                return str(ip)
    return peer


def _trusted(addr: str, proxies: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(p, strict=False) for p in proxies)
