"""Per-node change logs and long-poll waiters: a change wakes exactly the nodes whose view changed.

Each node has a short in-memory log of (version, item) pairs, appended only when that node's view
changes, so recording a change costs O(nodes affected). An item is a peer id (that peer changed or
became visible), a negated peer id (that peer was removed or hidden) or 0 (the node's own record
changed). A long poll at `since=V` is answered from the items after V; if the log no longer
reaches back to V (trimmed, or the server restarted), the caller gets a full map instead.

Memory matters here: at 10,000 nodes every node holds a long poll and a log. The logs are two
`array('q')` per node (16 bytes an item, no object per change), and a node has no event object:
a waiting poll parks one future in `_NodeLog.waiters` only while it waits.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field

# Items a log keeps at least; it is trimmed back to this when it holds twice as many.
LOG_LIMIT = 128
SELF = 0  # the item meaning "the node's own record changed" (node ids start at 1)

INSTANCE_BITS = 12
_INSTANCE_MASK = (1 << INSTANCE_BITS) - 1
EPOCH_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z


class VersionClock:
    """Netmap versions: strictly increasing in one process, and telling processes apart.

    A version is `(ticks << 12) | instance`: `ticks` is milliseconds since 2025 (or one more
    than the last, so it always grows), `instance` a random 12 bits drawn at start. Versions
    are not the store's counter because presence (online, last_seen) is kept per server and
    never committed, yet a presence flip must still wake long polls with a new version. So a
    process answers deltas only for versions it issued itself (`mine`, plus the log's own
    bounds); any other `since` - from another coordination server after a failover, or from
    before a restart - gets a full map. A restart starts above every version it issued before
    (the wall clock moved on). Kept under 2**53 for 70 years, so JSON readers stay exact.
    """

    def __init__(self, instance: int | None = None) -> None:
        self.instance = secrets.randbelow(1 << INSTANCE_BITS) if instance is None else instance
        self._ticks = 0

    def next(self) -> int:
        self._ticks = max(self._ticks + 1, int(time.time() * 1000) - EPOCH_MS)
        return (self._ticks << INSTANCE_BITS) | self.instance

    def mine(self, version: int) -> bool:
        return version & _INSTANCE_MASK == self.instance


@dataclass
class Delta:
    changed: set[int] = field(default_factory=set)
    removed: set[int] = field(default_factory=set)
    self_changed: bool = False

    def empty(self) -> bool:
        return not (self.changed or self.removed or self.self_changed)


class _NodeLog:
    __slots__ = ("base", "versions", "items", "waiters")

    def __init__(self, base: int) -> None:
        self.base = base  # the log holds every change of this node's view after `base`
        self.versions = array("q")
        self.items = array("q")
        self.waiters: list[asyncio.Future[bool]] | None = None

    def wake(self, result: bool) -> None:
        waiters, self.waiters = self.waiters, None
        for fut in waiters or ():
            if not fut.done():
                fut.set_result(result)


class Broadcaster:
    def __init__(self, version: int) -> None:
        self.start_version = version
        self._logs: dict[int, _NodeLog] = {}
        self.waiting = 0
        self.fanned_out = 0

    def track(self, node_id: int, version: int) -> None:
        """Start logging a node (at registration or at start): its view is complete from
        `version` on."""
        if node_id not in self._logs:
            self._logs[node_id] = _NodeLog(version)

    def reset(self, version: int) -> None:
        """Drop every log (after a full reload): each node's next poll gets a full map."""
        self.start_version = version
        for log in self._logs.values():
            log.base = version
            del log.versions[:]
            del log.items[:]
            log.wake(True)

    def wake_all(self) -> None:
        """Answer every waiting long poll as if it had timed out (the server is stopping)."""
        for log in self._logs.values():
            log.wake(False)

    def tracked(self) -> list[int]:
        return list(self._logs)

    def forget(self, node_id: int) -> None:
        log = self._logs.pop(node_id, None)
        if log is not None:
            log.wake(True)

    def record(
        self,
        version: int,
        node_id: int,
        *,
        changed: Iterable[int] = (),
        removed: Iterable[int] = (),
        self_changed: bool = False,
    ) -> None:
        """Append one change to a node's log and wake its long polls."""
        log = self._logs.get(node_id)
        if log is None:
            return  # never seen since start: its next poll gets a full map anyway
        versions, items = log.versions, log.items
        before = len(items)
        items.extend(changed)
        items.extend(-pid for pid in removed)
        if self_changed:
            items.append(SELF)
        added = len(items) - before
        if not added:
            return
        if added == 1:
            versions.append(version)
        else:
            versions.extend([version] * added)
        if len(items) > 2 * LOG_LIMIT:
            cut = len(items) - LOG_LIMIT
            # Items of one version may straddle the cut: `base` is that version, and a poll
            # holding it already has all of it, so the remaining items are still what it lacks.
            log.base = versions[cut - 1]
            del versions[:cut]
            del items[:cut]
        self.fanned_out += 1
        if log.waiters:
            log.wake(True)

    def can_delta(self, node_id: int, since: int, current: int) -> bool:
        log = self._logs.get(node_id)
        return log is not None and log.base <= since <= current

    def delta(self, node_id: int, since: int) -> Delta:
        out = Delta()
        log = self._logs.get(node_id)
        if log is None:
            return out
        versions, items = log.versions, log.items
        # Versions only grow along the log: scan back to the first item after `since`.
        start = len(versions)
        while start > 0 and versions[start - 1] > since:
            start -= 1
        changed, removed = out.changed, out.removed
        for i in range(start, len(items)):
            item = items[i]
            if item > 0:
                removed.discard(item)
                changed.add(item)
            elif item < 0:
                changed.discard(-item)
                removed.add(-item)
            else:
                out.self_changed = True
        return out

    def has_news(self, node_id: int, since: int) -> bool:
        """Whether the node's log holds any change after `since` (cheaper than `delta`)."""
        log = self._logs.get(node_id)
        return log is not None and len(log.versions) > 0 and log.versions[-1] > since

    def waiter(self, node_id: int) -> asyncio.Future[bool] | None:
        """A future that gets True at the node's next change (or its removal); None for a node
        not tracked. The caller must `release` it when it stops waiting."""
        log = self._logs.get(node_id)
        if log is None:
            return None
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if log.waiters is None:
            log.waiters = [fut]
        else:
            log.waiters.append(fut)
        self.waiting += 1
        return fut

    def trim_waiters(self, node_id: int, keep: int) -> int:
        """Answer the node's oldest waiting polls as timed out until at most `keep` wait; how
        many were answered. (A node that opens poll after poll must not hold them all.)"""
        log = self._logs.get(node_id)
        if log is None or not log.waiters or len(log.waiters) <= keep:
            return 0
        cut = len(log.waiters) - keep
        oldest, log.waiters = log.waiters[:cut], log.waiters[cut:] or None
        for fut in oldest:
            if not fut.done():
                fut.set_result(False)
        return cut

    def release(self, node_id: int, fut: asyncio.Future[bool]) -> None:
        self.waiting -= 1
        log = self._logs.get(node_id)
        if log is not None and log.waiters and fut in log.waiters:
            log.waiters.remove(fut)
            if not log.waiters:
                log.waiters = None

    async def wait(self, node_id: int, timeout: float) -> bool:
        """Wait until the node's view changes; False on timeout."""
        fut = self.waiter(node_id)
        if fut is None:
            return False
        loop = asyncio.get_running_loop()
        timer = loop.call_later(timeout, _resolve, fut, False)
        try:
            return await fut
        finally:
            timer.cancel()
            self.release(node_id, fut)


def _resolve(fut: asyncio.Future[bool], value: bool) -> None:
    if not fut.done():
        fut.set_result(value)
