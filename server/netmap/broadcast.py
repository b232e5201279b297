"""Per-node change logs and long-poll waiters: a change wakes exactly the nodes whose view changed.

Each node has a short in-memory log of (version, peers changed, peers removed, self changed)
entries, appended only when that node's view changes, so recording a change costs O(nodes
affected). A long poll at `since=V` is answered from the entries after V; if the log no longer
reaches back to V (trimmed, or the server restarted), the caller gets a full map instead.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

LOG_LIMIT = 128


@dataclass
class Entry:
    version: int
    changed: frozenset[int]
    removed: frozenset[int]
    self_changed: bool


@dataclass
class Delta:
    changed: set[int] = field(default_factory=set)
    removed: set[int] = field(default_factory=set)
    self_changed: bool = False

    def empty(self) -> bool:
        return not (self.changed or self.removed or self.self_changed)


@dataclass
class _NodeLog:
    base: int  # the log holds every change of this node's view after `base`
    entries: deque[Entry] = field(default_factory=deque)
    event: asyncio.Event = field(default_factory=asyncio.Event)


class Broadcaster:
    def __init__(self, version: int) -> None:
        self.start_version = version
        self._logs: dict[int, _NodeLog] = {}
        self.waiting = 0
        self.fanned_out = 0

    def _log(self, node_id: int, version: int) -> _NodeLog:
        log = self._logs.get(node_id)
        if log is None:
            # A node we have not heard of since start: its view is complete from `version` on.
            log = self._logs[node_id] = _NodeLog(base=version)
        return log

    def track(self, node_id: int, version: int) -> None:
        """Start logging a node (at registration or first poll after a restart)."""
        self._log(node_id, version)

    def forget(self, node_id: int) -> None:
        log = self._logs.pop(node_id, None)
        if log is not None:
            log.event.set()

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
        entry = Entry(version, frozenset(changed), frozenset(removed), self_changed)
        log.entries.append(entry)
        if len(log.entries) > LOG_LIMIT:
            dropped = log.entries.popleft()
            log.base = dropped.version
        self.fanned_out += 1
        event = log.event
        log.event = asyncio.Event()
        event.set()

    def can_delta(self, node_id: int, since: int, current: int) -> bool:
        log = self._logs.get(node_id)
        return log is not None and log.base <= since <= current

    def delta(self, node_id: int, since: int) -> Delta:
        out = Delta()
        log = self._logs.get(node_id)
        if log is None:
            return out
        for entry in log.entries:
            if entry.version <= since:
                continue
            out.self_changed |= entry.self_changed
            for pid in entry.changed:
                out.removed.discard(pid)
                out.changed.add(pid)
            for pid in entry.removed:
                out.changed.discard(pid)
                out.removed.add(pid)
        return out

    async def wait(self, node_id: int, timeout: float) -> bool:
        """Wait until the node's view changes; False on timeout."""
        log = self._logs.get(node_id)
        if log is None:
            return False
        event = log.event
        self.waiting += 1
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self.waiting -= 1
