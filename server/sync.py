"""Keeps this server's working set in step with commits other coordination servers make.

One task per server reads the etcd watch (`EtcdStore.watch`, which already skips this server's
own acknowledged commits) and applies each foreign commit under the state's lock: records into
memory, the policy index and IPAM kept in step, and the same before/after fan-out a local change
makes, so long polls held here wake for changes made anywhere. If the watch's history was
compacted away, everything is read again and every node's log is reset (full maps next poll).
At start the task also publishes this server's URLs (netmap `servers`) and backfills address
claims a store written before claims existed lacks. A second task keeps the store's endpoint list
equal to the cluster's members (etcd's MemberList every few seconds): etcd tells no one when
membership changes, and a removed member's address must not stay in the list (issue 12).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from .errors import ApiError
from .model import AuthKeyRec, NodeRec, TokenRec, UserRec, from_record
from .reach.record import public_record
from .state import SERVER_PREFIX, Plan
from .store.base import Op, Put, StoreError, Unavailable
from .store.etcd import Compacted, EtcdStore, WatchBatch

if TYPE_CHECKING:
    from .state import State

log = logging.getLogger("pcloud.server.sync")

RETRY_S = 2.0  # between attempts at start-up writes and reloads while the store is down
# How often the member list is read: membership changes are rare and a stale entry costs only a
# failed connection per failover until then; one small call per period is nothing for etcd.
MEMBERS_EVERY_S = 3.0


def apply_batch(state: State, batch: WatchBatch) -> None:
    """Apply one foreign commit to memory and fan it out (caller holds `state.lock`)."""
    version = state.stamp()
    if batch.version is not None:
        state.store_version = max(state.store_version, batch.version)
    users_changed = servers_changed = False
    for ch in batch.changes:
        value = ch.value
        if ch.kind == "user":
            users_changed = True
            if value is None:
                state.users.pop(ch.key, None)
            else:
                state.users[ch.key] = from_record(UserRec, value)
        elif ch.kind == "token":
            _put(state.tokens, ch.key, None if value is None else from_record(TokenRec, value))
        elif ch.kind == "authkey":
            _put(state.authkeys, ch.key, None if value is None else from_record(AuthKeyRec, value))
        elif ch.kind == "node":
            _apply_node(state, version, int(ch.key), value)
        elif ch.kind == "policy" and ch.key == "current":
            text = None if value is None else value.get("text")
            if text != state.policy_text:
                state.policy_applied(state._parse_stored(text), version)
        elif ch.kind == "meta":
            servers_changed |= _apply_meta(state, ch.key, value)
        elif ch.kind == "addr":
            _apply_addr(state, ch.key, value)
    if users_changed:
        # Admin flags never change after creation; a new admin owns no nodes yet and a deleted
        # user's nodes leave in the same commit, so no view changes through this alone.
        state.index.set_admins(state.admins())
    if servers_changed:
        state.servers_changed(version)


def _put(table: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value


def _apply_node(state: State, version: int, node_id: int, value: dict[str, Any] | None) -> None:
    old = state.nodes.get(node_id)
    if value is None:
        if old is not None:
            state.drop_node(old, version, state.peers_of(node_id))
        return
    node = from_record(NodeRec, value)
    if old is not None and old.last_seen is not None:
        node.last_seen = old.last_seen  # presence is this server's own knowledge
    before = state.peers_of(node_id) if old is not None else set()
    facts_changed = state.upsert_node(node, old)
    after = state.peers_of(node_id)
    if old is None:
        state.bus.track(node_id, version)
    state.fanout(
        version,
        node_id,
        before,
        after,
        content_changed=old is not None,
        self_changed=old is not None,
        facts_changed=facts_changed,
    )


def _apply_meta(state: State, key: str, value: dict[str, Any] | None) -> bool:
    if key == "next_node_id" and value is not None:
        state.next_node_id = int(value["value"])
    elif key == "k3s":
        state.k3s = value
    elif key.startswith(SERVER_PREFIX):
        _put(state.servers, key[len(SERVER_PREFIX) :], value)
        return True
    return False


def _apply_addr(state: State, address: str, value: dict[str, Any] | None) -> None:
    if value is None:
        owner = state.addrs.pop(address, None)
        if owner is None or owner not in state.nodes:
            state.ipam.release(address)
    else:
        state.addrs[address] = int(value.get("node", 0))
        state.ipam.mark(address)


class StoreSync:
    """The watch task of one server, and the place `transact` waits for it to catch up."""

    def __init__(self, state: State, store: EtcdStore) -> None:
        self.state = state
        self.store = store
        self._task: asyncio.Task[None] | None = None
        self._members: asyncio.Task[None] | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.applied = 0  # foreign commits applied since start (tests and metrics)

    def start(self) -> None:
        self.state.sync = self
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="store-sync")
        self._members = loop.create_task(self._follow_members(), name="store-members")

    async def stop(self) -> None:
        for task in (self._task, self._members):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self.state.sync = None

    async def _follow_members(self) -> None:
        last: list[str] = []
        while True:
            endpoints = await self.store.follow_members()
            if endpoints is not None and endpoints != last:
                log.info("etcd endpoints (the cluster's members): %s", ", ".join(endpoints))
                last = endpoints
            await asyncio.sleep(MEMBERS_EVERY_S)  # a period: etcd offers no membership watch

    async def reached(self, revision: int, timeout: float) -> bool:
        """Wait until the working set includes everything up to store `revision`."""
        if self.store.revision >= revision:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (revision, fut)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def _notify(self) -> None:
        for revision, fut in list(self._waiters):
            if self.store.revision >= revision and not fut.done():
                fut.set_result(None)

    async def _run(self) -> None:
        await self._startup_writes()
        next_rev = self.store.loaded_at + 1
        while True:
            try:
                async for batch in self.store.watch(next_rev):
                    async with self.state.lock:
                        apply_batch(self.state, batch)
                        self.store.advance(batch)
                    next_rev = batch.revision + 1
                    self.applied += 1
                    self._notify()
            except Compacted as exc:
                log.warning("%s; reloading the whole store", exc)
                await self._reload()
                next_rev = self.store.loaded_at + 1
            except StoreError as exc:
                log.error("store watch failed (%s); resuming from revision %d", exc, next_rev)
                await asyncio.sleep(RETRY_S)  # backoff before resuming, not a synchronisation

    async def _reload(self) -> None:
        while True:
            try:
                snap = await self.store.aload()
                break
            except Unavailable as exc:
                log.warning("cannot reload the store yet: %s", exc)
                await asyncio.sleep(RETRY_S)  # backoff while the store has no quorum
        async with self.state.lock:
            self.state.load(snap)
        self._notify()

    async def _startup_writes(self) -> None:
        """Publish our URLs and backfill address claims; retried until the store takes them."""
        while True:
            try:
                await publish_self(self.state)
                return
            except ApiError as exc:
                log.warning("cannot publish this server in the store yet: %s", exc.message)
            except StoreError as exc:
                log.warning("cannot publish this server in the store yet: %s", exc)
            await asyncio.sleep(RETRY_S)  # backoff while the store refuses writes


async def publish_self(state: State) -> None:
    """One commit: this server's URLs under meta `server:<hostname>`, plus an `addr` claim for
    every node that lacks one (stores written before claims existed), when anything differs."""

    def build() -> Plan[None]:
        ops: list[Op] = []
        me = {"urls": state.settings.server_urls(), "instance": state.clock.instance}
        me.update(public_record(state.settings))  # the cluster's public URLs (server/reach)
        host = state.settings.hostname
        if state.servers.get(host) != me:
            ops.append(Put("meta", SERVER_PREFIX + host, me))
        missing = [n for n in state.nodes.values() if state.addrs.get(n.address) != n.id]
        ops += [Put("addr", n.address, {"node": n.id}) for n in missing]

        def apply(version: int) -> None:
            for n in missing:
                state.addrs[n.address] = n.id
            if state.servers.get(host) != me:
                state.servers[host] = me
                state.servers_changed(version)

        return Plan(ops, apply)

    started = time.monotonic()
    await state.transact(build)
    log.debug("published this server in %.3f s", time.monotonic() - started)
