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
from dataclasses import KW_ONLY, dataclass, field

from pcloud.backend.control.client import ControlClient, ControlError, ControlUnreachable
from pcloud.server.protocol import Netmap

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0


def backoff_delay(
    attempt: int,
    base: float = BACKOFF_BASE_S,
    cap: float = BACKOFF_CAP_S,
    rng: random.Random | None = None,
) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)] (AWS architecture blog's
    "exponential backoff and jitter"), at least a tenth of the ceiling so we never spin."""
    ceiling = min(cap, base * 2.0 ** min(attempt, 30))
    uniform = rng.uniform if rng else random.uniform
    return max(ceiling / 10, uniform(0, ceiling))


class ServerList:
    """Coordination servers in failover order; `current` is the one we are talking to."""

    def __init__(self, first: str, rank: Callable[[str], int] | None = None) -> None:
        self._urls = [first]
        self._index = 0
        # Failover order: where a server can be reached from here first (from outside the home,
        # the public URL before the LAN ones, each of which costs a connect timeout).
        self._rank = rank

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
        merged = list(dict.fromkeys(merged))
        if self._rank is not None:
            merged.sort(key=self._rank)  # stable: the netmap's order within a rank
        self._urls = merged
        self._index = self._urls.index(current)

    def advance(self) -> str:
        self._index = (self._index + 1) % len(self._urls)
        return self.current


@dataclass(eq=False, repr=False)  # repr=False: the token is a secret
class NetmapFollower:
    """What the long poll and the stream (`stream.StreamPoller`) share: the servers, the node's
    token, the version to ask from, the core's callbacks, and the wake-up that cuts a backoff
    short."""

    client: ControlClient
    servers: ServerList
    token: str
    _: KW_ONLY
    since: int | None
    on_netmap: Callable[[Netmap], Awaitable[None]]
    on_fatal: Callable[[ControlError], Awaitable[None]]
    on_reachable: Callable[[str | None], None]

    def __post_init__(self) -> None:
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Retry now, not after the backoff (e.g. the liveness probe saw the server answer)."""
        self._wake.set()

    async def failed(self, e: BaseException, interrupted: str) -> str | None:
        """The problem a try ran into, to report before the backoff and the next server; None
        when the server refused our credentials (401/403: the core is told through `on_fatal`
        and following ends). A cancel from `interrupt` is the problem `interrupted`; our own
        task being cancelled goes on up."""
        if isinstance(e, asyncio.CancelledError):
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise e  # we are being stopped, not interrupted
            return interrupted
        if isinstance(e, ControlError) and e.status in (401, 403):
            log.warning("coordination server refused our node credentials: %s", e)
            await self.on_fatal(e)
            return None
        return str(e)

    async def pause(self, delay: float) -> None:
        """The backoff between tries, cut short by `wake`."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()


@dataclass(eq=False, repr=False)
class Poller(NetmapFollower):
    """Keeps the node's netmap current over long polls; see the module doc."""

    timeout: int = field(default=50, kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._inflight: asyncio.Future[Netmap] | None = None

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
                self.client.netmap(server, self.token, self.since, self.timeout)
            )
            try:
                answer = await self._inflight
            except (asyncio.CancelledError, ControlError, ControlUnreachable) as e:
                failure = await self.failed(
                    e, "interrupted: the server stopped answering the liveness probe"
                )
                if failure is None:
                    return
                problem = failure
            else:
                attempt = 0
                self.since = answer.version
                self.on_reachable(None)
                if answer.servers:
                    self.servers.update(answer.servers)
                try:
                    await self.on_netmap(answer)
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
            self.on_reachable(f"coordination server unreachable: {problem}")
            await self.pause(delay)
