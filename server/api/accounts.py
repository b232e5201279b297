"""Routes for setup, login, users and pre-auth keys (DESIGN section 2)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ..protocol import (
    AuthKeyCreate,
    AuthKeyCreated,
    AuthKeyInfo,
    Health,
    LoginRequest,
    SetupAnswer,
    SetupRequest,
    TokenAnswer,
    User,
    UserCreate,
)
from .deps import AccountsDep, AdminUser, BearerDep, CurrentUser, client_ip

router = APIRouter(prefix="/api/v1")


@router.get("/health", response_model=Health, tags=["meta"])
async def health(request: Request, accounts: AccountsDep) -> Health:
    return Health(
        version=request.app.version,
        needs_setup=accounts.needs_setup(),
        store=accounts.state.store_kind,
    )


@router.post("/setup", response_model=SetupAnswer, tags=["accounts"])
async def setup(body: SetupRequest, accounts: AccountsDep) -> SetupAnswer:
    user, token, expires = await accounts.setup(body.setup_code, body.username, body.password)
    return SetupAnswer(username=user.username, token=token, expires_at=expires)


@router.post("/login", response_model=TokenAnswer, tags=["accounts"])
async def login(body: LoginRequest, request: Request, accounts: AccountsDep) -> TokenAnswer:
    token, expires = await accounts.login(body.username, body.password, client_ip(request))
    return TokenAnswer(token=token, expires_at=expires)


@router.delete("/sessions/self", status_code=204, tags=["accounts"])
async def logout(accounts: AccountsDep, token: BearerDep) -> None:
    """Revoke the presented user token (log out); its other sessions stay."""
    await accounts.logout(token)


@router.post("/users", response_model=User, status_code=201, tags=["accounts"])
async def create_user(body: UserCreate, accounts: AccountsDep, _: AdminUser) -> User:
    rec = await accounts.create_user(body.username, body.password, body.admin)
    return User(username=rec.username, admin=rec.admin, created_at=rec.created_at)


@router.get("/users", response_model=list[User], tags=["accounts"])
async def list_users(accounts: AccountsDep, _: AdminUser) -> list[User]:
    users = sorted(accounts.state.users.values(), key=lambda u: u.username)
    return [User(username=u.username, admin=u.admin, created_at=u.created_at) for u in users]


@router.delete("/users/{username}", status_code=204, tags=["accounts"])
async def delete_user(username: str, accounts: AccountsDep, _: AdminUser) -> None:
    await accounts.delete_user(username)


@router.post("/auth-keys", response_model=AuthKeyCreated, status_code=201, tags=["auth-keys"])
async def create_auth_key(
    body: AuthKeyCreate, accounts: AccountsDep, caller: CurrentUser
) -> AuthKeyCreated:
    key, rec = await accounts.create_auth_key(
        caller,
        user=body.user,
        reusable=body.reusable,
        ephemeral=body.ephemeral,
        expires_in_s=body.expires_in_s,
        role=body.role,
        tags=body.tags,
    )
    return AuthKeyCreated(key=key, prefix=rec.prefix, expires_at=rec.expires_at)


@router.get("/auth-keys", response_model=list[AuthKeyInfo], tags=["auth-keys"])
async def list_auth_keys(accounts: AccountsDep, caller: CurrentUser) -> list[AuthKeyInfo]:
    return [
        AuthKeyInfo(
            prefix=k.prefix,
            user=k.user,
            reusable=k.reusable,
            ephemeral=k.ephemeral,
            role=k.role,
            tags=list(k.tags),
            expires_at=k.expires_at,
            used=k.used,
            created_at=k.created_at,
        )
        for k in accounts.visible_keys(caller)
    ]


@router.delete("/auth-keys/{prefix}", status_code=204, tags=["auth-keys"])
async def expire_auth_key(prefix: str, accounts: AccountsDep, caller: CurrentUser) -> None:
    await accounts.expire_auth_key(caller, prefix)
