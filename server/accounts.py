"""Users, their session tokens, pre-auth keys, node tokens and the one-time setup code.

Passwords are argon2id hashes; tokens and auth keys are random and kept as SHA-256 digests, so the
store never holds a usable secret. The setup code lives in `STATE_DIR/setup-code` (0600) only
until the first admin exists. Logins are limited per username, per source address and per pair,
and password hashing is bounded (security.ratelimit). User tokens expire, can be revoked (logout)
and are purged once expired; node tokens expire after `node_token_ttl_s` and are renewed with a
proof of the node's key (security.nodeproof).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import ApiError, conflict, forbidden, not_found, unauthorized
from .layout import setup_code_file
from .model import AuthKeyRec, NodeRec, TokenRec, UserRec, now
from .protocol import Role
from .security import passwords, tokens
from .security.nodeproof import NodeProofs
from .security.ratelimit import Busy, HashGate, LoginLimiter
from .state import State, expired
from .store.base import Op

log = logging.getLogger("pcloud.server.accounts")


@dataclass(frozen=True)
class Caller:
    """Who a bearer token belongs to."""

    username: str
    admin: bool


class Accounts:
    def __init__(self, state: State) -> None:
        self.state = state
        settings = state.settings
        self.limiter = LoginLimiter(
            settings.login_attempts_per_minute,
            per_user=settings.login_failures_per_user,
            per_source=settings.login_failures_per_source,
        )
        self.hashes = HashGate(settings.max_concurrent_hashes, settings.max_queued_hashes)
        self.setup_path = setup_code_file(settings.state_dir)
        self._proofs: NodeProofs | None = None

    @property
    def proofs(self) -> NodeProofs:
        """The server's proof key, made on first use (the admin command never needs one)."""
        if self._proofs is None:
            self._proofs = NodeProofs(self.state.settings.state_dir)
        return self._proofs

    async def _hash(self, func: object, *args: str) -> object:
        """Run one argon2id call in a thread, within the bound on concurrent hashes."""
        try:
            async with self.hashes.slot():
                return await asyncio.to_thread(func, *args)  # type: ignore[arg-type]
        except Busy:
            raise ApiError(
                503,
                "busy",
                "too many logins are being checked right now; retry in a few seconds",
                retry_after=2,
            ) from None

    # ---- setup ------------------------------------------------------------------------------

    def needs_setup(self) -> bool:
        return not self.state.users

    def ensure_setup_code(self) -> str | None:
        """The setup code while no user exists (made once, kept 0600); None afterwards."""
        if not self.needs_setup():
            self.setup_path.unlink(missing_ok=True)
            return None
        if self.setup_path.exists():
            return self.setup_path.read_text().strip()
        code = tokens.new_setup_code()
        write_private(self.setup_path, code + "\n")
        return code

    async def setup(
        self, code: str, username: str, password: str
    ) -> tuple[UserRec, str, dt.datetime]:
        if not self.needs_setup():
            raise conflict("already_set_up", "setup is done: an admin already exists")
        expected = self.ensure_setup_code() or ""
        if not tokens.same(code.strip(), expected):
            raise forbidden("setup_code is wrong (see the setup-code file in the state dir)")
        user = await self._new_user(username, password, admin=True)
        if not self.needs_setup():  # another setup won while we hashed
            raise conflict("already_set_up", "setup is done: an admin already exists")
        token, expires = self._issue(username)
        rec = TokenRec(tokens.digest(token), username, expires)

        def check() -> None:
            if not self.needs_setup():  # another server's setup won meanwhile
                raise conflict("already_set_up", "setup is done: an admin already exists")

        await self.state.add_user(user, rec, check)
        self.setup_path.unlink(missing_ok=True)
        log.info("first admin %s created", username)
        return user, token, expires

    # ---- users and sessions -----------------------------------------------------------------

    async def _new_user(self, username: str, password: str, *, admin: bool) -> UserRec:
        # argon2id takes tens of milliseconds by design: keep it off the event loop.
        digest = await self._hash(passwords.hash_password, password)
        assert isinstance(digest, str)
        return UserRec(username, admin, digest, now())

    def _issue(self, username: str) -> tuple[str, dt.datetime]:
        token = tokens.new_token(tokens.USER_TOKEN)
        return token, now() + dt.timedelta(seconds=self.state.settings.token_ttl_s)

    async def login(self, username: str, password: str, client: str) -> tuple[str, dt.datetime]:
        wait, what = self.limiter.blocked(username, client)
        if wait > 0:
            raise ApiError(
                429,
                "rate_limited",
                f"too many failed logins for {what}; try again in {int(wait) + 1} s",
                retry_after=wait,
            )
        user = self.state.users.get(username)
        ok = await self._hash(
            passwords.verify_password,
            user.password_hash if user else passwords.DUMMY_HASH,
            password,
        )
        if user is None or not ok:
            self.limiter.failed(username, client)
            raise unauthorized("wrong username or password")
        self.limiter.succeeded(username, client)
        token, expires = self._issue(username)
        rec = TokenRec(tokens.digest(token), username, expires)
        await self.state.add_token(rec)
        return token, expires

    def caller(self, token: str) -> Caller:
        rec = self.state.tokens.get(tokens.digest(token))
        if rec is None:
            raise unauthorized(
                "token is unknown or was revoked (logged out, or its user was deleted)"
            )
        if expired(rec.expires_at):
            raise unauthorized("token expired; log in again")
        user = self.state.users.get(rec.username)
        if user is None:
            raise unauthorized("the token's user was deleted")
        return Caller(user.username, user.admin)

    async def logout(self, token: str) -> None:
        """Revoke the presented user token (DELETE /sessions/self)."""
        self.caller(token)  # 401 when it is unknown or expired already
        digest = tokens.digest(token)
        await self.state.drop_tokens(lambda d, _rec: d == digest)

    async def purge_expired(self) -> int:
        """Delete expired user tokens from the store (they only ever answer 401)."""
        doomed = await self.state.drop_tokens(lambda _d, rec: expired(rec.expires_at))
        if doomed:
            log.info("purged %d expired user tokens", len(doomed))
        return len(doomed)

    async def create_user(self, username: str, password: str, admin: bool) -> UserRec:
        if username in self.state.users:
            raise conflict("user_exists", f"user {username!r} already exists")
        user = await self._new_user(username, password, admin=admin)

        def check() -> None:
            if username in self.state.users:
                raise conflict("user_exists", f"user {username!r} already exists")

        await self.state.add_user(user, check=check)
        return user

    async def delete_user(self, username: str) -> None:
        """The user, their sessions, keys and untagged devices (one transaction)."""
        await self.state.delete_user(username)

    # ---- auth keys --------------------------------------------------------------------------

    async def create_auth_key(
        self,
        caller: Caller,
        *,
        user: str | None,
        reusable: bool,
        ephemeral: bool,
        expires_in_s: int,
        role: Role,
        tags: Sequence[str],
    ) -> tuple[str, AuthKeyRec]:
        owner = user or caller.username
        if not caller.admin:
            if owner != caller.username:
                raise forbidden("only an admin may create auth keys for another user")
            if role != "client":
                raise forbidden("only an admin may create server-role auth keys")
            if tags:
                raise forbidden("only an admin may create tagged auth keys")
        if owner not in self.state.users:
            raise not_found(f"user {owner!r}")
        key, prefix = tokens.new_auth_key()
        rec = AuthKeyRec(
            prefix=prefix,
            digest=tokens.digest(key),
            user=owner,
            reusable=reusable,
            ephemeral=ephemeral,
            role=role,
            tags=tuple(tags),
            expires_at=now() + dt.timedelta(seconds=expires_in_s),
            created_at=now(),
        )
        await self.state.add_auth_key(rec)
        return key, rec

    def visible_keys(self, caller: Caller) -> list[AuthKeyRec]:
        keys = self.state.authkeys.values()
        return sorted(
            (k for k in keys if caller.admin or k.user == caller.username),
            key=lambda k: k.created_at,
        )

    async def expire_auth_key(self, caller: Caller, prefix: str) -> None:
        def check(rec: AuthKeyRec | None) -> None:
            if rec is None or not (caller.admin or rec.user == caller.username):
                raise not_found(f"auth key {prefix!r}")

        await self.state.drop_auth_key(prefix, check)

    def check_auth_key(self, key: str) -> AuthKeyRec:
        prefix = tokens.auth_key_prefix(key)
        rec = self.state.authkeys.get(prefix) if prefix else None
        if rec is None or not tokens.same(rec.digest, tokens.digest(key)):
            raise unauthorized("auth key is unknown or was revoked")
        if expired(rec.expires_at):
            raise unauthorized(
                f"auth key expired at {rec.expires_at.isoformat(timespec='seconds')}: ask an admin "
                "for a new one "
                f"(pcloud-server admin auth-keys create --user {rec.user})"
            )
        if rec.used and not rec.reusable:
            raise unauthorized("auth key was already used (it is single-use)")
        return rec

    def spend_ops(self, key: str) -> list[Op]:
        """Check `key` again against the working set and return the op that spends it (a
        single-use key), to commit with what it pays for. Called at every attempt of that
        commit, so two servers racing to use one single-use key cannot both succeed."""
        return self.state.spend_ops(self.check_auth_key(key))

    def spent(self, key: str) -> None:
        """After the commit: the in-memory record of a single-use key says used."""
        self.state.key_spent(tokens.auth_key_prefix(key) or "")

    async def spend(self, key: str) -> None:
        """Spend a single-use key on its own (checked again at every attempt)."""
        await self.state.spend_key(lambda: self.check_auth_key(key))

    # ---- nodes ------------------------------------------------------------------------------

    def node_for_token(self, token: str, *, allow_expired: bool = False) -> NodeRec:
        node_id = self.state.node_by_token.get(tokens.digest(token))
        if node_id is None:
            raise unauthorized("node token is unknown (the node was removed or logged out)")
        node = self.state.nodes[node_id]
        if (
            not allow_expired
            and node.token_expires_at is not None
            and expired(node.token_expires_at)
        ):
            raise ApiError(
                401,
                "node_token_expired",
                "node token expired: renew it with a proof of the node's key "
                "(POST /api/v1/nodes/self/token)",
            )
        return node

    def node_token_expiry(self) -> dt.datetime:
        return now() + dt.timedelta(seconds=self.state.settings.node_token_ttl_s)


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
