"""Account records: users, their session tokens and pre-auth keys, written through the state.

`accounts.Accounts` decides (passwords, limits, who may do what); the records it changes are
committed here, each change checked again against the working set of every attempt (`check`),
so two servers racing for the same name or single-use key cannot both win.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..errors import conflict, not_found
from ..model import AuthKeyRec, TokenRec, UserRec, to_record
from ..store.base import Delete, Op, Put
from .nodes import NodeChanges
from .transact import Plan


def _never() -> None:
    return None


class AccountRecords(NodeChanges):
    """Transactions on users, tokens and auth keys (a user's removal takes their nodes)."""

    def _user_added(self, user: UserRec) -> None:
        self.users[user.username] = user
        self.index.set_admins(self.admins())

    async def add_user(
        self, user: UserRec, token: TokenRec | None = None, check: Callable[[], None] = _never
    ) -> None:
        """A new user (with a first session token); `check` raises when it may not be added."""

        def ops() -> list[Op]:
            check()
            found: list[Op] = [Put("user", user.username, to_record(user))]
            if token is not None:
                found.append(Put("token", token.digest, to_record(token)))
            return found

        def apply() -> None:
            self._user_added(user)
            if token is not None:
                self.tokens[token.digest] = token

        await self.change(ops, apply)

    async def delete_user(self, username: str) -> None:
        """One transaction: the user, their sessions, keys and untagged devices go together."""

        def build() -> Plan[None]:
            if username not in self.users:
                raise not_found(f"user {username!r}")
            if self.users[username].admin and not self.admins() - {username}:
                raise conflict("last_admin", "cannot delete the last admin")
            ops: list[Op] = [Delete("user", username)]
            doomed_tokens = [d for d, t in self.tokens.items() if t.username == username]
            doomed_keys = [p for p, k in self.authkeys.items() if k.user == username]
            ops += [Delete("token", d) for d in doomed_tokens]
            ops += [Delete("authkey", p) for p in doomed_keys]
            doomed = [n for n in self.nodes.values() if n.user == username and not n.tags]
            node_ops, drop_nodes = self.plan_delete_nodes(doomed)

            def apply(version: int) -> None:
                drop_nodes(version)
                for d in doomed_tokens:
                    self.tokens.pop(d, None)
                for p in doomed_keys:
                    self.authkeys.pop(p, None)
                self.users.pop(username, None)
                self.index.set_admins(self.admins())

            return Plan([*node_ops, *ops], apply)

        await self.transact(build)

    async def add_token(self, rec: TokenRec) -> None:
        await self.change(
            lambda: [Put("token", rec.digest, to_record(rec))],
            lambda: self.tokens.__setitem__(rec.digest, rec),
        )

    async def drop_tokens(self, pick: Callable[[str, TokenRec], bool]) -> list[str]:
        """Delete the user tokens `pick` chooses (by digest and record); their digests."""
        doomed: list[str] = []

        def ops() -> list[Op]:
            doomed[:] = [d for d, t in self.tokens.items() if pick(d, t)]
            return [Delete("token", d) for d in doomed]

        def apply() -> None:
            for d in doomed:
                self.tokens.pop(d, None)

        await self.change(ops, apply)
        return doomed

    async def add_auth_key(self, rec: AuthKeyRec) -> None:
        await self.change(
            lambda: [Put("authkey", rec.prefix, to_record(rec))],
            lambda: self.authkeys.__setitem__(rec.prefix, rec),
        )

    async def drop_auth_key(self, prefix: str, check: Callable[[AuthKeyRec | None], None]) -> None:
        """Delete an auth key; `check` (given the key's record, or None) raises if it may not."""

        def ops() -> list[Op]:
            check(self.authkeys.get(prefix))
            return [Delete("authkey", prefix)]

        await self.change(ops, lambda: self.authkeys.pop(prefix, None))

    def spend_ops(self, rec: AuthKeyRec) -> list[Op]:
        """The op that marks a single-use key used, to commit with what it pays for (none for
        a reusable key); `key_spent` after that commit."""
        if rec.reusable:
            return []
        return [Put("authkey", rec.prefix, to_record(dataclasses.replace(rec, used=True)))]

    def key_spent(self, prefix: str) -> None:
        rec = self.authkeys.get(prefix)
        if rec is not None and not rec.reusable:
            self.authkeys[prefix] = dataclasses.replace(rec, used=True)

    async def spend_key(self, check: Callable[[], AuthKeyRec]) -> None:
        """Spend a key on its own (`check` returns its record, or raises, at every attempt)."""
        spent: list[str] = []

        def ops() -> list[Op]:
            rec = check()
            spent[:] = [rec.prefix]
            return self.spend_ops(rec)

        await self.change(ops, lambda: self.key_spent(spent[0]))
