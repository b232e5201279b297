"""Is the coordination server answering? Asked every few seconds while the long poll waits.

A long poll that waits a minute for changes cannot tell a quiet server from a hung or vanished
one until it times out; `GET /health` with a short timeout can. A failed probe reports the
server unreachable at once (the core records since when); a probe that succeeds clears it and
wakes the poller out of its backoff, so recovery also shows within seconds. Each device then
holds one more (idle, keep-alive) connection to its server and sends one tiny request per
interval: the price of seeing an outage in seconds instead of a minute.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from pcloud.backend.control.client import ControlClient, ControlError, ControlUnreachable
from pcloud.backend.control.poller import ServerList

INTERVAL_S = 5.0
TIMEOUT_S = 3.0
HEALTH_PATH = "/api/v1/health"


def _not_a_probe(record: logging.LogRecord) -> bool:
    # httpx logs every request at INFO: one probe line every few seconds would bury the log.
    return HEALTH_PATH not in record.getMessage()


logging.getLogger("httpx").addFilter(_not_a_probe)


class Liveness:
    def __init__(
        self,
        client: ControlClient,
        servers: ServerList,
        *,
        on_reachable: Callable[[str | None], None],
        on_recovered: Callable[[], None],
        interval_s: float = INTERVAL_S,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self.client, self.servers = client, servers
        self._on_reachable, self._on_recovered = on_reachable, on_recovered
        self.interval_s, self.timeout_s = interval_s, timeout_s

    async def run(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.interval_s)  # the probe's period, not synchronisation
            try:
                await self.client.health(self.servers.current, self.timeout_s)
            except (ControlUnreachable, ControlError) as e:
                failing = True
                self._on_reachable(f"coordination server unreachable: {e}")
                continue
            if failing:
                failing = False
                self._on_recovered()  # the poller retries now instead of after its backoff
            self._on_reachable(None)
