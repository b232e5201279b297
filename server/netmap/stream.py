"""Streamed netmaps: one held request per node, and one line written to it at each change.

A long poll costs the server a whole new request (TLS record, HTTP parse, auth, routing, a new
waiting task) after every answer, 10,000 times for a change that every node sees. A stream pays
that once: the node's request stays open, and a change costs one rendered delta and one write
per node whose view changed (the broadcaster wakes exactly those), nothing for the others.

`serve` writes, in newline-delimited JSON (protocol.stream): first the full map, or the delta
from the `since` the client sent when this process vouches for it; then a delta at each change
(coalesced: a stream that was not scheduled between two changes writes one delta for both, and
a client that reads slowly holds back its own stream only, catching up from the log, or with a
full map once the log no longer reaches back); a keep-alive line after `keepalive_s` of silence.
It ends when the client goes away, the node is removed, the server stops (the client reconnects
elsewhere or after the restart), or the node opens more streams than `max_polls_per_node`
(the oldest ends first). While a stream is open the node counts as online, as during a poll.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.types import Receive, Send

from ..protocol import KEEPALIVE_HEADER, KEEPALIVE_LINE, MEDIA_TYPE
from . import build

if TYPE_CHECKING:
    from ..state import State

_NL = b"\n"


class Stream:
    """One open stream; what the hub needs to end it from outside."""

    __slots__ = ("node_id", "fut", "ended")

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        self.fut: asyncio.Future[Any] | None = None  # set while the stream waits for news
        self.ended = False

    def end(self) -> None:
        self.ended = True
        if self.fut is not None and not self.fut.done():
            self.fut.set_result(None)


class StreamHub:
    """The open streams of each node, so a node cannot hold more than its cap."""

    def __init__(self) -> None:
        self._open: dict[int, list[Stream]] = {}
        self.count = 0

    def add(self, stream: Stream, cap: int) -> int:
        """Register a stream, ending the node's oldest ones beyond `cap`; how many ended."""
        streams = self._open.setdefault(stream.node_id, [])
        streams.append(stream)
        self.count += 1
        ended = 0
        while len(streams) > cap:
            streams.pop(0).end()
            self.count -= 1
            ended += 1
        return ended

    def remove(self, stream: Stream) -> None:
        streams = self._open.get(stream.node_id)
        if streams is not None and stream in streams:
            streams.remove(stream)
            self.count -= 1
            if not streams:
                del self._open[stream.node_id]

    def end_all(self) -> None:
        for streams in self._open.values():
            for stream in streams:
                stream.end()


def _settle(fut: asyncio.Future[Any], value: bool | None) -> None:
    if not fut.done():
        fut.set_result(value)


async def _watch_gone(receive: Receive, stream: Stream) -> None:
    # A GET has no body: after the (empty) request message the next one is the disconnect.
    while (await receive())["type"] != "http.disconnect":
        pass
    stream.end()


def first_line(state: State, node_id: int, since: int | None) -> tuple[bytes, int]:
    """The stream's first message and the version it brings the client to."""
    if since is None or not state.vouches(node_id, since):
        return build.full_json(state, node_id), state.version
    change = state.bus.delta(node_id, since)
    if change.empty():
        return build.unchanged_json(state, node_id, since), since
    return build.delta_json(state, node_id, change), state.version


def next_line(state: State, node_id: int, since: int) -> tuple[bytes, int] | None:
    """The message for what changed after `since`; None when nothing did."""
    if not state.vouches(node_id, since):
        return build.full_json(state, node_id), state.version  # reloaded, or the log was trimmed
    change = state.bus.delta(node_id, since)
    if change.empty():
        return None
    return build.delta_json(state, node_id, change), state.version


def start_message(keepalive_s: float) -> dict[str, Any]:
    return {
        "type": "http.response.start",
        "status": 200,
        "headers": [
            (b"content-type", MEDIA_TYPE.encode()),
            (b"cache-control", b"no-store"),
            (KEEPALIVE_HEADER.encode(), b"%g" % keepalive_s),
        ],
    }


async def serve(
    state: State,
    hub: StreamHub,
    node_id: int,
    since: int | None,
    receive: Receive,
    send: Send,
    keepalive_s: float,
    token_left: Callable[[], float | None],
) -> None:
    """Stream the node's netmap until the client goes, the node goes, the server stops or the
    token the stream was opened with runs out: `token_left` says how many seconds it has
    (None: no expiry; 0 or less: expired or revoked). The stream wakes at the expiry, and the
    client learns why when it reopens (401 node_token_expired)."""
    stream = Stream(node_id)
    hub.add(stream, state.settings.max_polls_per_node)
    loop = asyncio.get_running_loop()
    gone = loop.create_task(_watch_gone(receive, stream))
    state.poll_started(node_id)
    bus = state.bus
    try:
        await send(start_message(keepalive_s))
        line, since = first_line(state, node_id, since)
        await send({"type": "http.response.body", "body": line + _NL, "more_body": True})
        written = time.monotonic()
        while not (stream.ended or state.draining) and node_id in state.nodes:
            # (The token is checked at the top of each round: see `left` below.)
            fut = bus.waiter(node_id)
            if fut is None:
                break
            stream.fut = fut
            left = token_left()
            if left is not None and left <= 0:
                break
            wake_at = written + keepalive_s
            if left is not None:
                wake_at = min(wake_at, loop.time() + left)
            timer = loop.call_at(wake_at, _settle, fut, False)
            try:
                await fut
            finally:
                timer.cancel()
                stream.fut = None
                bus.release(node_id, fut)
            if stream.ended or state.draining or node_id not in state.nodes:
                break
            news = next_line(state, node_id, since)
            if news is not None:
                line, since = news
                await send({"type": "http.response.body", "body": line + _NL, "more_body": True})
            elif time.monotonic() >= written + keepalive_s:
                await send(
                    {"type": "http.response.body", "body": KEEPALIVE_LINE, "more_body": True}
                )
            else:
                continue  # woken early with nothing to say (a poll cap's trim): keep waiting
            written = time.monotonic()
        # A clean end: the client reconnects (and a removed node learns why from the 401).
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        gone.cancel()
        hub.remove(stream)
        state.poll_ended(node_id)
