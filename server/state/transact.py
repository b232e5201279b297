"""Transactions: every change is a `Plan` committed to the store, then applied to memory.

A plan is built from the working set without touching it (its ops), committed as one store
transaction, then applied to memory under a new netmap version (the fan-out follows in its
`apply`). Under etcd several servers write the same store: a commit that lost the race
(`Conflict`) waits until this server's watch has applied the winner's change (`CatchUp`, which
`sync.StoreSync` is), rebuilds its plan from the fresh working set and tries again;
`Unavailable` (no quorum) is a 503 with nothing applied.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from ..config import Settings
from ..errors import ApiError
from ..presence import Presence
from ..store.base import (
    ClaimTaken,
    Conflict,
    Op,
    Snapshot,
    Store,
    StoreKind,
    Unavailable,
)
from .fanout import FanOut

log = logging.getLogger("pcloud.server.state")

T = TypeVar("T")

# How long a change keeps retrying while other servers win the race for the store; a conflict
# means someone else made progress, so this only bounds a hot spot, never a deadlock.
RETRY_DEADLINE_S = 5.0


def store_unavailable(exc: Exception) -> ApiError:
    return ApiError(
        503,
        "store_unavailable",
        f"the coordination store has no quorum: too few of its etcd members answer, so it "
        f"cannot take changes now ({exc}); reads keep being served; retry once the other "
        "servers are back",
    )


@dataclass
class Plan(Generic[T]):
    """One change: the ops to commit, what to do in memory after the commit (given the new
    netmap version), and how to give back anything reserved while planning (an address)."""

    ops: list[Op]
    apply: Callable[[int], T]
    undo: Callable[[], None] | None = None


class CatchUp(Protocol):
    """The watch on a shared store (sync.StoreSync): waits until a revision is applied."""

    async def reached(self, revision: int, timeout: float) -> bool: ...


class Transactions(FanOut):
    """The fan-out's working set, written through to the store one `Plan` at a time."""

    def __init__(self, settings: Settings, store: Store, presence: Presence) -> None:
        super().__init__(settings, presence)
        self.store = store
        self.store_kind: StoreKind = store.kind
        self.lock = asyncio.Lock()
        self.sync: CatchUp | None = None
        self.store_version = 0

    def load(self, snap: Snapshot) -> None:
        """(Re)build the working set from a full snapshot: at start and after a resync, when
        every node's log is reset so that its next poll gets a full map."""
        self.store_version = snap.version
        self.load_records(snap)
        self.reset_logs()

    async def _write(self, ops: Sequence[Op]) -> None:
        version = self.store_version + 1
        await self.store.acommit(ops, version)
        self.store_version = version

    async def transact(self, build: Callable[[], Plan[T]]) -> T:
        """Build, commit and apply one change; rebuild and retry when another server won."""
        deadline = time.monotonic() + RETRY_DEADLINE_S
        while True:
            async with self.lock:
                plan = build()
                if not plan.ops:
                    return plan.apply(self.version)  # nothing to change
                try:
                    await self._write(plan.ops)
                except BaseException as exc:
                    # Whatever ended the commit (a store error, a cancelled request, a bug), it
                    # is not applied here: give back what the plan reserved. If it landed all
                    # the same, the watch delivers it like another server's change.
                    if plan.undo is not None:
                        plan.undo()
                    revision = self._after_failed_commit(exc)
                else:
                    return plan.apply(self.stamp())
            if time.monotonic() > deadline:
                raise ApiError(
                    503, "store_busy", "other coordination servers kept changing the store; retry"
                )
            if revision:
                await self.catch_up(revision, deadline)

    def _after_failed_commit(self, exc: BaseException) -> int:
        """The store revision to catch up with before the plan is built again (0: none
        needed); raises when the change cannot be retried."""
        if isinstance(exc, Unavailable):
            raise store_unavailable(exc) from None
        if isinstance(exc, ClaimTaken) and exc.kind == "addr":
            # Taken but unknown here: an orphan claim. Never hand it out again.
            log.warning("address %s is claimed by no known node; skipping it", exc.key)
            self.ipam.mark(exc.key)
            return 0
        if isinstance(exc, ClaimTaken) and exc.kind == "node" and exc.key.isdigit():
            # A node id in the store that this working set never saw (a commit of ours whose
            # outcome we never learned): never hand it out again, so no node is overwritten.
            log.warning("node id %s is taken by a node unknown here; skipping it", exc.key)
            self.next_node_id = max(self.next_node_id, int(exc.key) + 1)
            return 0
        if isinstance(exc, Conflict):
            return exc.revision
        raise exc

    async def catch_up(self, revision: int, deadline: float) -> None:
        """Wait until the working set includes the store's change at `revision`."""
        if self.sync is not None:
            if not await self.sync.reached(revision, max(0.05, deadline - time.monotonic())):
                raise store_unavailable(RuntimeError("this server's watch on the store is behind"))
            return
        # No watch (the admin command's in-process state): read everything again.
        try:
            snap = await self.store.aload()
        except Unavailable as exc:
            raise store_unavailable(exc) from None
        async with self.lock:
            self.load(snap)

    async def change(self, ops: Callable[[], Sequence[Op]], apply: Callable[[], T]) -> T:
        """A change whose memory side needs no version (accounts, K3s record)."""
        return await self.transact(lambda: Plan(list(ops()), lambda _v: apply()))
