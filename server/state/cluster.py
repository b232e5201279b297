"""Cluster records: the K3s join record and the coordination servers' own list (netmap `servers`).

`meta/k3s` holds the K3s join token and server URLs (DESIGN section 5); `meta/server:<hostname>`
holds each coordination server's URLs. Every node hears of a change to the server list.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..reach.record import public_record
from ..store.base import Delete, Op, Put
from .transact import Plan, Transactions
from .working_set import SERVER_PREFIX

log = logging.getLogger("pcloud.server.state")

K3S_KEY = "k3s"  # the meta record of the K3s join token and server URLs

K3sRecord = dict[str, Any]  # {"token": str, "server_urls": [str, ...]}


class ClusterRecords(Transactions):
    """Transactions on the K3s record and the coordination-server list."""

    async def edit_k3s(self, edit: Callable[[K3sRecord | None], K3sRecord | None]) -> bool:
        """Change the K3s record: `edit` gets the current one (at every attempt) and returns
        the new one, or None or an equal record when nothing changes (it may raise to refuse).
        Whether the record changed."""
        new: list[K3sRecord] = []

        def ops() -> list[Op]:
            value = self.k3s
            record = edit(value)
            new[:] = [] if record is None or record == value else [dict(record)]
            return [Put("meta", K3S_KEY, dict(r)) for r in new]

        def apply() -> bool:
            if new:
                self.k3s = dict(new[0])
            return bool(new)

        return await self.change(ops, apply)

    async def withdraw_server(self, host: str) -> list[str] | None:
        """Take coordination server `host` off the list; the URLs it had (None: not listed)."""

        def build() -> Plan[list[str] | None]:
            record = self.servers.get(host)
            if record is None:
                return Plan([], lambda _v: None)  # already withdrawn

            def apply(version: int) -> list[str]:
                self.servers.pop(host, None)
                self.servers_changed(version)
                return [str(u) for u in record.get("urls", [])]

            return Plan([Delete("meta", SERVER_PREFIX + host)], apply)

        return await self.transact(build)

    async def publish_self(self) -> None:
        """One commit: this server's URLs under meta `server:<hostname>`, plus an `addr` claim
        for every node that lacks one (stores written before claims existed), when anything
        differs."""

        def build() -> Plan[None]:
            ops: list[Op] = []
            me = {"urls": self.settings.server_urls(), "instance": self.clock.instance}
            me.update(public_record(self.settings))  # the cluster's public URLs (server/reach)
            host = self.settings.hostname
            if self.servers.get(host) != me:
                ops.append(Put("meta", SERVER_PREFIX + host, me))
            missing = [n for n in self.nodes.values() if self.addrs.get(n.address) != n.id]
            ops += [Put("addr", n.address, {"node": n.id}) for n in missing]

            def apply(version: int) -> None:
                for n in missing:
                    self.addrs[n.address] = n.id
                if self.servers.get(host) != me:
                    self.servers[host] = me
                    self.servers_changed(version)

            return Plan(ops, apply)

        started = time.monotonic()
        await self.transact(build)
        log.debug("published this server in %.3f s", time.monotonic() - started)
