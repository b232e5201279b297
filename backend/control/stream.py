"""Follow the netmap stream (`GET /netmap/stream`): one held request, a netmap at each change.

`StreamPoller` is the long poll's replacement (same callbacks as `poller.Poller`). It holds the
stream open and hands every netmap line to the core. The server writes a keep-alive line after
each quiet interval (it says how long in a response header); silence for `SILENCE_FACTOR`
intervals means the server or the path to it died without a FIN, so the stream is dropped and
another one opened. That deadline is tens of seconds (the interval is 20 s by default), too slow
to show a hung server to the user, so a liveness probe (`liveness.Liveness`, `GET /health` every
`probe_s`) runs beside whatever is followed, the stream or the long poll: a failed probe shows the
outage at once and interrupts the request in flight, and a probe that succeeds again cuts the
backoff short.

After a stream breaks it retries quickly (`FAST_RETRY_S`, jittered) for a while, since a server
that was streaming a moment ago is most likely restarting, and so a device is back on its
stream within a second or so of the server's return. After `FAST_WINDOW_S` without the server
it backs off exponentially, as the long poll does, and moves along the netmap's server list.

A server without the stream (404: an older pcloud-server) gets the long poll of `poller.Poller`
for as long as this task runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

import httpx
from pydantic import ValidationError

from pcloud.backend.control.client import API, ControlError, ControlUnreachable
from pcloud.backend.control.client import _error as answer_error
from pcloud.backend.control.liveness import Liveness
from pcloud.backend.control.poller import NetmapFollower, Poller, backoff_delay
from pcloud.backend.control.reach import describe
from pcloud.server.protocol import (
    KEEPALIVE_HEADER,
    KEEPALIVE_LINE,
    MAX_LINE_BYTES,
    STREAM_PATH,
    Netmap,
)
from pcloud.shared.tasks import cancel_and_wait

log = logging.getLogger(__name__)

DEFAULT_KEEPALIVE_S = 20.0  # until the server's header says otherwise
SILENCE_FACTOR = 2.0  # keep-alive intervals of silence (plus a margin) that mean "dead"
SILENCE_MARGIN_S = 1.0
FAST_RETRY_S = (0.1, 0.6)
FAST_WINDOW_S = 30.0
CONNECT_TIMEOUT_S = 10.0
INTERRUPTED = "interrupted: the server stopped answering or its address changed"


class NoStream(Exception):
    """The server has no netmap stream (404): use the long poll."""


def silence_limit(keepalive_s: float) -> float:
    return keepalive_s * SILENCE_FACTOR + SILENCE_MARGIN_S


async def netmap_lines(
    http: httpx.AsyncClient, server: str, token: str, since: int | None
) -> AsyncGenerator[Netmap | None, None]:
    """The stream's messages: a `Netmap`, or None for a keep-alive. Raises `ControlError` for an
    error answer, `NoStream` on 404, `ControlUnreachable` when the server cannot be reached, goes
    silent for too long, or sends something that is not the stream's format."""
    params = {"since": since} if since is not None else {}
    headers = {"Authorization": f"Bearer {token}"}
    timeout = httpx.Timeout(CONNECT_TIMEOUT_S, read=None)
    try:
        async with http.stream(
            "GET", f"{server}{API}{STREAM_PATH}", params=params, headers=headers, timeout=timeout
        ) as answer:
            if answer.status_code == 404:
                raise NoStream(server)
            if answer.status_code >= 400:
                await answer.aread()
                raise answer_error(answer, server)
            limit = silence_limit(_keepalive(answer.headers.get(KEEPALIVE_HEADER)))
            buffer = bytearray()
            chunks = answer.aiter_raw().__aiter__()
            while True:
                try:
                    async with asyncio.timeout(limit):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    if buffer:
                        raise ControlUnreachable(
                            f"{server}: the netmap stream broke off mid-line"
                        ) from None
                    return  # a clean end: the server stops, or this node opened another stream
                except TimeoutError:
                    raise ControlUnreachable(
                        f"{server} sent nothing on the netmap stream for {limit:g} s (no "
                        "keep-alive: the server is hung, or the network path to it is down)"
                    ) from None
                buffer += chunk
                while (end := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[: end + 1])
                    del buffer[: end + 1]
                    yield _message(line, server)
                if len(buffer) > MAX_LINE_BYTES:
                    raise ControlUnreachable(f"{server}: a netmap stream line exceeds the limit")
    except httpx.HTTPError as e:
        raise ControlUnreachable(describe(e, server)) from None


def _keepalive(header: str | None) -> float:
    try:
        value = float(header) if header is not None else DEFAULT_KEEPALIVE_S
    except ValueError:
        return DEFAULT_KEEPALIVE_S
    # A server cannot make us wait forever, nor ask us to time out on every scheduling hiccup.
    return min(max(value, 0.05), 300.0)


def _message(line: bytes, server: str) -> Netmap | None:
    if line == KEEPALIVE_LINE or not line.strip():
        return None
    try:
        return Netmap.model_validate_json(line)
    except ValidationError as e:
        raise ControlUnreachable(f"{server}: unexpected netmap stream line: {e}") from None


@dataclass(eq=False, repr=False)
class StreamPoller(NetmapFollower):
    """Keeps the node's netmap current over the stream; see the module doc."""

    poll_timeout: int = field(default=50, kw_only=True)  # the long poll's, without a stream
    probe_s: float = field(default=5.0, kw_only=True)  # its liveness probe's interval

    def __post_init__(self) -> None:
        super().__post_init__()
        self.streaming = False  # a stream is open (for status and tests)
        self._reader: asyncio.Task[bool] | None = None  # the stream being read
        self._fallback: Poller | None = None  # the long poll, against a server without streams
        self._attempt = self._failures = 0
        self._heard = time.monotonic()  # when the server last sent anything

    def interrupt(self) -> None:
        """Give up the stream being read (the liveness probe got no answer, or the server's
        name now resolves elsewhere): a stream on a dead connection would otherwise wait out
        the keep-alive silence before the server (its name resolved again on a new
        connection) is tried again."""
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
        if self._fallback is not None:
            self._fallback.interrupt()

    async def _read(self, server: str) -> bool:
        """Follow `server`'s stream until it ends; False if the core could not take a netmap."""
        lines = netmap_lines(self.client.http, server, self.token, self.since)
        async with contextlib.aclosing(lines):
            async for message in lines:
                if not self.streaming:
                    self.streaming = True
                    self._attempt = 0
                    log.info("netmap stream open to %s", server)
                self._heard = time.monotonic()
                self.on_reachable(None)
                if message is None:
                    continue  # a keep-alive
                if not await self._handle(message):
                    return False  # reconnect asking for a full map, after a pause
                self._failures = 0
        return True

    def wake(self) -> None:
        super().wake()
        if self._fallback is not None:
            self._fallback.wake()

    async def run(self) -> None:
        """Follow the stream (or the long poll), with the liveness probe beside it."""

        def probed(problem: str | None) -> None:
            self.on_reachable(problem)
            if problem is not None:
                self.interrupt()  # what is in flight may hang on a dead connection

        liveness = Liveness(
            self.client, self.servers, on_reachable=probed,
            on_recovered=self.wake, interval_s=self.probe_s,
        )  # fmt: skip
        probe = asyncio.create_task(liveness.run())
        try:
            await self._follow()
        finally:
            await cancel_and_wait(probe)

    async def _follow(self) -> None:
        while True:
            server = self.servers.current
            self._reader = asyncio.ensure_future(self._read(server))
            interrupted = False  # by the probe or a name's move (`interrupt`)
            try:
                if not await self._reader:
                    self._failures += 1
                problem = None
            except NoStream:
                log.warning("%s has no netmap stream: using the long poll", server)
                await self._long_poll()
                return
            except (asyncio.CancelledError, ControlError, ControlUnreachable) as e:
                failure = await self.failed(e, INTERRUPTED)
                if failure is None:
                    return
                problem, interrupted = failure, failure == INTERRUPTED
            finally:
                self.streaming = False
            if self._failures:
                delay = backoff_delay(self._failures)
            elif time.monotonic() - self._heard < FAST_WINDOW_S:
                delay = random.uniform(*FAST_RETRY_S)
            else:
                self._attempt += 1
                delay = backoff_delay(self._attempt)
            # Next time the next server of the netmap's list (the same one when there is one):
            # a stream that failed or ended (its server stopping) is better tried elsewhere.
            # After an interrupt the same server again: its name, resolved anew, leads to it
            # after a move, and the probe moves nobody along the list on a hiccup.
            nxt = self.servers.current if interrupted else self.servers.advance()
            if problem is not None:
                log.warning("netmap stream failed (%s); retrying %s in %.1fs", problem, nxt, delay)
                if not interrupted:  # whoever interrupted (the probe, a name's move) says why
                    self.on_reachable(f"coordination server unreachable: {problem}")
            await self.pause(delay)

    async def _handle(self, answer: Netmap) -> bool:
        """Hand one netmap to the core; False if it could not take it (then: a full map)."""
        self.since = answer.version
        if answer.servers:
            self.servers.update(answer.servers)
        try:
            await self.on_netmap(answer)
        except Exception:
            # As in the long poll: a map the core cannot handle must not end the stream for
            # good. Reconnect without `since` for a full map, which repairs what it left.
            log.exception("handling netmap v%s failed; asking for a full map", answer.version)
            self.since = None
            return False
        return True

    async def _long_poll(self) -> None:
        """The fallback: the long poll, until credentials are refused."""
        self._fallback = Poller(
            self.client, self.servers, self.token, since=self.since,
            on_netmap=self.on_netmap, on_fatal=self.on_fatal,
            on_reachable=self.on_reachable, timeout=self.poll_timeout,
        )  # fmt: skip
        await self._fallback.run()
