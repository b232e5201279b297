"""The long-poll loop: hold `GET /netmap` open, hand every answer to the core, survive outages.

On failure it waits with capped, fully jittered exponential backoff (so a fleet does not
reconnect in lock-step after a server restart) and moves to the next coordination server of the
netmap's `servers` list. An answer that says our credentials are gone (401/403) ends the loop
through `on_fatal`; anything else is retried forever, while the core keeps the last netmap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable

from pcloud.backend.control.client import ControlClient, ControlError, ControlUnreachable
from pcloud.server.protocol import Netmap

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0


def backoff_delay(attempt: int, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S,
                  rng: random.Random | None = None) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)] (AWS architecture blog's
    "exponential backoff and jitter"), at least a tenth of the ceiling so we never spin."""
    ceiling = min(cap, base * 2.0 ** min(attempt, 30))
    uniform = rng.uniform if rng else random.uniform
    return max(ceiling / 10, uniform(0, ceiling))


class ServerList:
    """Coordination servers in failover order; `current` is the one we are talking to."""

    def __init__(self, first: str) -> None:
        self._urls = [first]
        self._index = 0

    @property
    def current(self) -> str:
        return self._urls[self._index]

    @property
    def urls(self) -> list[str]:
        return list(self._urls)

    def update(self, urls: Iterable[str]) -> None:
        """Adopt the netmap's list, keeping the current server current."""
        current = self.current
        merged = [u.rstrip("/") for u in urls]
        if current not in merged:
            merged.insert(0, current)
        self._urls = list(dict.fromkeys(merged))
        self._index = self._urls.index(current)

    def advance(self) -> str:
        self._index = (self._index + 1) % len(self._urls)
        return self.current


class Poller:
    def __init__(
        self,
        client: ControlClient,
        servers: ServerList,
        token: str,
        *,
        since: int | None,
        on_netmap: Callable[[Netmap], Awaitable[None]],
        on_fatal: Callable[[ControlError], Awaitable[None]],
        on_reachable: Callable[[str | None], None],
        timeout: int = 50,
    ) -> None:
        self.client, self.servers, self._token = client, servers, token
        self.since = since
        self._on_netmap, self._on_fatal, self._on_reachable = on_netmap, on_fatal, on_reachable
        self.timeout = timeout
        self._wake = asyncio.Event()
        self._inflight: asyncio.Future[Netmap] | None = None

    def wake(self) -> None:
        """Retry now, not after the backoff (the liveness probe saw the server answer)."""
        self._wake.set()

    def interrupt(self) -> None:
        """Give up the poll in flight (the liveness probe saw the server stop answering): a
        long poll on a dead connection, e.g. to an address the server's name no longer has,
        would otherwise wait out its whole timeout before the next server (or the name,
        resolved again on a new connection) is tried."""
        if self._inflight is not None and not self._inflight.done():
            self._inflight.cancel()

    async def run(self) -> None:
        attempt = failures = 0
        while True:
            server = self.servers.current
            self._inflight = asyncio.ensure_future(
                self.client.netmap(server, self._token, self.since, self.timeout)
            )
            try:
                answer = await self._inflight
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # we are being stopped, not interrupted
                problem = "interrupted: the server stopped answering the liveness probe"
            except ControlError as e:
                if e.status in (401, 403):
                    log.warning("coordination server refused our node credentials: %s", e)
                    await self._on_fatal(e)
                    return
                problem = str(e)
            except ControlUnreachable as e:
                problem = str(e)
            else:
                attempt = 0
                self.since = answer.version
                self._on_reachable(None)
                if answer.servers:
                    self.servers.update(answer.servers)
                try:
                    await self._on_netmap(answer)
                    failures = 0
                except Exception:
                    # A netmap the core cannot handle must not end polling (no later netmap
                    # would ever arrive). Ask for a full map, which also repairs whatever this
                    # answer left half-applied, after a pause so one bad map cannot make us spin.
                    failures += 1
                    log.exception(
                        "handling netmap v%s failed; asking for a full map", answer.version
                    )
                    self.since = None
                    await asyncio.sleep(backoff_delay(failures))  # backoff, not synchronisation
                continue
            attempt += 1
            delay = backoff_delay(attempt)
            nxt = self.servers.advance()
            log.warning("netmap poll failed (%s); retrying with %s in %.1fs", problem, nxt, delay)
            self._on_reachable(f"coordination server unreachable: {problem}")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):  # backoff, cut short by wake()
                await asyncio.wait_for(self._wake.wait(), delay)
