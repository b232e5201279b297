"""Users, their session tokens, pre-auth keys and the one-time setup code.

Passwords are argon2id hashes; tokens and auth keys are random and kept as SHA-256 digests, so the
store never holds a usable secret. The setup code lives in `STATE_DIR/setup-code` (0600) only
until the first admin exists.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import ApiError, conflict, forbidden, not_found, unauthorized
from .model import AuthKeyRec, NodeRec, TokenRec, UserRec, now, to_record
from .security import passwords, tokens
from .security.ratelimit import LoginLimiter
from .state import State, expired
from .store.base import Delete, Op, Put

log = logging.getLogger("pcloud.server.accounts")


@dataclass(frozen=True)
class Caller:
    """Who a bearer token belongs to."""

    username: str
    admin: bool


class Accounts:
    def __init__(self, state: State) -> None:
        self.state = state
        self.limiter = LoginLimiter(state.settings.login_attempts_per_minute)
        self.setup_path = state.settings.state_dir / "setup-code"

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
        self.state.commit(
            [Put("user", username, to_record(user)), Put("token", rec.digest, to_record(rec))]
        )
        self._add_user(user)
        self.state.tokens[rec.digest] = rec
        self.setup_path.unlink(missing_ok=True)
        log.info("first admin %s created", username)
        return user, token, expires

    # ---- users and sessions -----------------------------------------------------------------

    async def _new_user(self, username: str, password: str, *, admin: bool) -> UserRec:
        # argon2id takes tens of milliseconds by design: keep it off the event loop.
        digest = await asyncio.to_thread(passwords.hash_password, password)
        return UserRec(username, admin, digest, now())

    def _add_user(self, user: UserRec) -> None:
        self.state.users[user.username] = user
        self.state.index.set_admins(self.state.admins())

    def _issue(self, username: str) -> tuple[str, dt.datetime]:
        token = tokens.new_token(tokens.USER_TOKEN)
        return token, now() + dt.timedelta(seconds=self.state.settings.token_ttl_s)

    async def login(self, username: str, password: str, client: str) -> tuple[str, dt.datetime]:
        wait = self.limiter.blocked(username, client)
        if wait > 0:
            raise ApiError(
                429, "rate_limited", f"too many failed logins; try again in {int(wait) + 1} s"
            )
        user = self.state.users.get(username)
        ok = await asyncio.to_thread(
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
        self.state.commit([Put("token", rec.digest, to_record(rec))])
        self.state.tokens[rec.digest] = rec
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

    async def create_user(self, username: str, password: str, admin: bool) -> UserRec:
        if username in self.state.users:
            raise conflict("user_exists", f"user {username!r} already exists")
        user = await self._new_user(username, password, admin=admin)
        if username in self.state.users:
            raise conflict("user_exists", f"user {username!r} already exists")
        self.state.commit([Put("user", username, to_record(user))])
        self._add_user(user)
        return user

    def delete_user(self, username: str) -> None:
        if username not in self.state.users:
            raise not_found(f"user {username!r}")
        remaining_admins = self.state.admins() - {username}
        if self.state.users[username].admin and not remaining_admins:
            raise conflict("last_admin", "cannot delete the last admin")
        ops: list[Op] = [Delete("user", username)]
        doomed_tokens = [d for d, t in self.state.tokens.items() if t.username == username]
        doomed_keys = [p for p, k in self.state.authkeys.items() if k.user == username]
        ops += [Delete("token", d) for d in doomed_tokens]
        ops += [Delete("authkey", p) for p in doomed_keys]
        # One transaction: the user, their sessions, keys and untagged devices go together.
        self.state.delete_nodes_of(username, ops)
        for d in doomed_tokens:
            del self.state.tokens[d]
        for p in doomed_keys:
            del self.state.authkeys[p]
        del self.state.users[username]
        self.state.index.set_admins(self.state.admins())

    # ---- auth keys --------------------------------------------------------------------------

    def create_auth_key(
        self,
        caller: Caller,
        *,
        user: str | None,
        reusable: bool,
        ephemeral: bool,
        expires_in_s: int,
        role: str,
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
        self.state.commit([Put("authkey", prefix, to_record(rec))])
        self.state.authkeys[prefix] = rec
        return key, rec

    def visible_keys(self, caller: Caller) -> list[AuthKeyRec]:
        keys = self.state.authkeys.values()
        return sorted(
            (k for k in keys if caller.admin or k.user == caller.username),
            key=lambda k: k.created_at,
        )

    def expire_auth_key(self, caller: Caller, prefix: str) -> None:
        rec = self.state.authkeys.get(prefix)
        if rec is None or not (caller.admin or rec.user == caller.username):
            raise not_found(f"auth key {prefix!r}")
        self.state.commit([Delete("authkey", prefix)])
        del self.state.authkeys[prefix]

    def check_auth_key(self, key: str) -> AuthKeyRec:
        prefix = tokens.auth_key_prefix(key)
        rec = self.state.authkeys.get(prefix) if prefix else None
        if rec is None or not tokens.same(rec.digest, tokens.digest(key)):
            raise unauthorized("auth key is unknown or was revoked")
        if expired(rec.expires_at):
            raise unauthorized("auth key expired")
        if rec.used and not rec.reusable:
            raise unauthorized("auth key was already used (it is single-use)")
        return rec

    def mark_used(self, rec: AuthKeyRec) -> list[Op]:
        """The op that spends a single-use key, to commit together with the registration."""
        if rec.reusable:
            return []
        spent = dataclasses.replace(rec, used=True)
        return [Put("authkey", rec.prefix, to_record(spent))]

    def spend(self, rec: AuthKeyRec) -> None:
        if not rec.reusable:
            rec.used = True

    # ---- nodes ------------------------------------------------------------------------------

    def node_for_token(self, token: str) -> NodeRec:
        node_id = self.state.node_by_token.get(tokens.digest(token))
        if node_id is None:
            raise unauthorized("node token is unknown (the node was removed or logged out)")
        return self.state.nodes[node_id]


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
