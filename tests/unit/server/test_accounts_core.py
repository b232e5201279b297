"""Accounts without HTTP: setup, users, sessions and auth keys decided by `Accounts` and written
through the state, over a real SQLite store (read back by a fresh state where it matters).

Tier: unit (no app, no process).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pcloud.server.accounts import Accounts, Caller
from pcloud.server.config import Listen, Settings
from pcloud.server.errors import ApiError
from pcloud.server.model import TokenRec, now
from pcloud.server.security import tokens
from pcloud.server.state import State
from pcloud.server.store.sqlite import SqliteStore


def open_accounts(tmp_path: Path) -> Accounts:
    settings = Settings(state_dir=tmp_path, listen=(Listen("127.0.0.1", 1),))
    return Accounts(State(settings, SqliteStore(tmp_path / "pcloud.db")))


def code(err: pytest.ExceptionInfo[ApiError]) -> tuple[int, str]:
    return err.value.status, err.value.code


async def test_setup_once_then_sessions_written_through(tmp_path: Path) -> None:
    accounts = open_accounts(tmp_path)
    setup_code = accounts.ensure_setup_code()
    assert setup_code and (tmp_path / "setup-code").stat().st_mode & 0o777 == 0o600
    with pytest.raises(ApiError) as wrong:
        await accounts.setup("not-it", "admin", "correct horse")
    assert code(wrong) == (403, "forbidden")
    _, token, _ = await accounts.setup(setup_code, "admin", "correct horse")
    assert accounts.caller(token) == Caller("admin", True)
    assert not (tmp_path / "setup-code").exists()
    with pytest.raises(ApiError) as twice:
        await accounts.setup(setup_code, "admin2", "correct horse")
    assert code(twice) == (409, "already_set_up")
    await accounts.create_user("alice", "alice's password", admin=False)
    with pytest.raises(ApiError) as exists:
        await accounts.create_user("alice", "x" * 12, admin=False)
    assert code(exists) == (409, "user_exists")
    alice, _ = await accounts.login("alice", "alice's password", "192.0.2.9")
    await accounts.logout(alice)
    with pytest.raises(ApiError) as revoked:
        accounts.caller(alice)
    assert code(revoked)[0] == 401
    # An expired session answers 401 and is purged from the store.
    old = TokenRec(tokens.digest("old"), "admin", now() - dt.timedelta(seconds=1))
    await accounts.state.add_token(old)
    assert await accounts.purge_expired() == 1
    accounts.state.close()
    again = open_accounts(tmp_path)
    assert set(again.state.users) == {"admin", "alice"} and again.state.admins() == {"admin"}
    assert again.caller(token).username == "admin"
    assert list(again.state.tokens) == [tokens.digest(token)]  # alice's and the old one: gone
    again.state.close()


async def test_auth_keys_single_use_and_deleting_a_user_takes_everything(tmp_path: Path) -> None:
    accounts = open_accounts(tmp_path)
    state = accounts.state
    await accounts.setup(accounts.ensure_setup_code() or "", "admin", "correct horse")
    await accounts.create_user("bob", "bob's password", admin=False)
    bob = Caller("bob", False)
    key, rec = await accounts.create_auth_key(
        bob, user=None, reusable=False, ephemeral=False, expires_in_s=60, role="client", tags=()
    )
    with pytest.raises(ApiError) as not_his:
        await accounts.create_auth_key(
            bob, user="admin", reusable=False, ephemeral=False, expires_in_s=60, role="client",
            tags=(),
        )  # fmt: skip
    assert code(not_his) == (403, "forbidden")
    # Registration spends a single-use key in its own commit.
    node = await state.register(
        public_key="k1", hostname="pi", endpoints=(), user="bob", role="client", tags=(),
        ephemeral=False, token_digest="t1", observed=None,
        also=lambda: accounts.spend_ops(key),
    )  # fmt: skip
    accounts.spent(key)
    with pytest.raises(ApiError) as used:
        accounts.check_auth_key(key)
    assert "already used" in used.value.message
    with pytest.raises(ApiError) as again_spent:  # e.g. a promotion with the same key
        await accounts.spend(key)
    assert code(again_spent)[0] == 401
    assert [k.prefix for k in accounts.visible_keys(bob)] == [rec.prefix]
    with pytest.raises(ApiError) as last:
        await accounts.delete_user("admin")
    assert code(last) == (409, "last_admin")
    await accounts.delete_user("bob")
    assert "bob" not in state.users and node.id not in state.nodes and not state.authkeys
    assert state.addrs == {}  # the address claim went with the node
    state.close()
    again = open_accounts(tmp_path)
    assert set(again.state.users) == {"admin"} and again.state.nodes == {}
    again.state.close()
