"""Keeps this server's working set in step with commits other coordination servers make.

One task per server reads the etcd watch (`EtcdStore.watch`, which already skips this server's
own acknowledged commits) and has the state replay each foreign commit under its lock
(state/replay.py), so long polls held here wake for changes made anywhere. If the watch's
history was compacted away, everything is read again and every node's log is reset (full maps
next poll). At start a task beside it has the state publish this server's URLs (netmap `servers`)
and backfill the address claims a store written before claims existed lacks
(`State.publish_self`). A second task keeps the store's endpoint list equal to the cluster's
members (etcd's MemberList every few seconds): etcd tells no one when membership changes, and a
removed member's address must not stay in the list (issue 12).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from pcloud.shared.tasks import cancel_and_wait

from .errors import ApiError
from .store.base import StoreError, Unavailable
from .store.etcd import Compacted, EtcdStore

if TYPE_CHECKING:
    from .state import State

log = logging.getLogger("pcloud.server.sync")

RETRY_S = 2.0  # between attempts at start-up writes and reloads while the store is down
# How often the member list is read: membership changes are rare and a stale entry costs only a
# failed connection per failover until then; one small call per period is nothing for etcd.
MEMBERS_EVERY_S = 3.0


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
            async with asyncio.timeout(timeout):
                await fut
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
        # The start-up writes run beside the watch, never before it: a write that loses a
        # race with another server's commit waits (`transact` -> `reached`) until this watch
        # has applied that commit, so awaiting them first deadlocked a server started while
        # another wrote (two servers starting together: the second never published, nor
        # applied anyone's commits).
        startup = asyncio.get_running_loop().create_task(
            self._startup_writes(), name="store-startup-writes"
        )
        try:
            await self._watch()
        finally:
            await cancel_and_wait(startup)

    async def _watch(self) -> None:
        next_rev = self.store.loaded_at + 1
        while True:
            try:
                async for batch in self.store.watch(next_rev):
                    async with self.state.lock:
                        self.state.apply_foreign(batch)
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
                await self.state.publish_self()
                return
            except ApiError as exc:
                log.warning("cannot publish this server in the store yet: %s", exc.message)
            except StoreError as exc:
                log.warning("cannot publish this server in the store yet: %s", exc)
            await asyncio.sleep(RETRY_S)  # backoff while the store refuses writes
