"""Presence: which nodes hold a long poll on this server, and ephemeral nodes' expiry.

Presence is kept in memory per server and never committed: with several coordination servers
on one store, `last_seen` at every poll start and end would make every server's commits conflict
with every other's. A flip of `online` still wakes the long polls of the node's peers, under a
new netmap version that only this process vouches for (netmap.broadcast.VersionClock).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from .config import Settings
from .errors import ApiError
from .model import NodeRec

log = logging.getLogger("pcloud.server.presence")


class Presence:
    """Who polls this server now; `changed(node_id)` fans a flip out, `expire(node_id)`
    removes an ephemeral node that stayed offline, `nodes()` is the working set's nodes."""

    def __init__(
        self,
        settings: Settings,
        *,
        nodes: Callable[[], Mapping[int, NodeRec]],
        changed: Callable[[int], None],
        expire: Callable[[int], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self._nodes = nodes
        self._changed = changed
        self._delete = expire
        self.online: set[int] = set()
        self._polls: dict[int, int] = {}
        self._offline_timers: dict[int, asyncio.TimerHandle] = {}
        self._ephemeral_timers: dict[int, asyncio.TimerHandle] = {}
        self._expiring: set[asyncio.Task[None]] = set()

    @property
    def nodes(self) -> Mapping[int, NodeRec]:
        return self._nodes()

    # ---- polls ----------------------------------------------------------------------------

    def poll_started(self, node_id: int) -> None:
        self._polls[node_id] = self._polls.get(node_id, 0) + 1
        self._cancel_timers(node_id)
        if node_id not in self.online and node_id in self.nodes:
            self.online.add(node_id)
            self._changed(node_id)

    def poll_ended(self, node_id: int) -> None:
        count = self._polls.get(node_id, 0) - 1
        if count > 0:
            self._polls[node_id] = count
            return
        self._polls.pop(node_id, None)
        if node_id not in self.nodes:
            return
        loop = asyncio.get_running_loop()
        # A client re-polls within milliseconds after each answer; only a gap longer than the
        # grace period means the device is gone (Headscale waits 10 s for the same reason).
        self._offline_timers[node_id] = loop.call_later(
            self.settings.offline_grace_s, self._went_offline, node_id
        )

    def _went_offline(self, node_id: int) -> None:
        self._offline_timers.pop(node_id, None)
        if node_id not in self.nodes or self._polls.get(node_id):
            return
        self.online.discard(node_id)
        self._changed(node_id)
        node = self.nodes[node_id]
        if node.ephemeral:
            loop = asyncio.get_running_loop()
            self._ephemeral_timers[node_id] = loop.call_later(
                self.settings.ephemeral_timeout_s, self._expire_ephemeral, node_id
            )

    def _expire_ephemeral(self, node_id: int) -> None:
        self._ephemeral_timers.pop(node_id, None)
        if node_id in self.nodes and node_id not in self.online:
            log.info("ephemeral node %d offline too long; removing it", node_id)
            task = asyncio.get_running_loop().create_task(self._expire(node_id))
            self._expiring.add(task)
            task.add_done_callback(self._expiring.discard)

    async def _expire(self, node_id: int) -> None:
        try:
            await self._delete(node_id)
        except ApiError as exc:
            # The store refused (no quorum) or the node went away meanwhile; it is tried again
            # the next time the node goes offline, or at the next start's sweep.
            log.warning("could not remove ephemeral node %d: %s", node_id, exc.message)

    def _cancel_timers(self, node_id: int) -> None:
        for timers in (self._offline_timers, self._ephemeral_timers):
            handle = timers.pop(node_id, None)
            if handle is not None:
                handle.cancel()

    def sweep(self) -> None:
        """At start nobody is online: give every ephemeral node its offline timer."""
        loop = asyncio.get_running_loop()
        for node in self.nodes.values():
            if node.ephemeral and node.id not in self.online:
                self._ephemeral_timers[node.id] = loop.call_later(
                    self.settings.ephemeral_timeout_s, self._expire_ephemeral, node.id
                )

    def forget(self, node_id: int) -> None:
        self.online.discard(node_id)
        self._cancel_timers(node_id)

    def reloaded(self, nodes: Mapping[int, NodeRec]) -> None:
        """After a full reload: nodes gone meanwhile are no longer online."""
        for node_id in [n for n in self.online if n not in nodes]:
            self.forget(node_id)

    def close(self) -> None:
        for timers in (self._offline_timers, self._ephemeral_timers):
            for handle in timers.values():
                handle.cancel()
            timers.clear()
        for task in self._expiring:
            task.cancel()
