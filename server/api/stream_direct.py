"""The netmap stream's lean door: served from the connection's protocol, with no ASGI request.

Through ASGI, every held stream keeps a request task alive, and with it uvicorn's request cycle
(two events, the scope), the frames of every middleware and the app's, and a second task that
waits for the disconnect: several KB per node, for a request that after its first line only
ever writes. Here the HTTP protocol (transport.protocol.GuardedProtocol) hands a well-formed
`GET /api/v1/netmap/stream` with a valid node token to `door` as soon as its head is parsed, and
the stream lives as callbacks: a future from the broadcaster whose done-callback renders and
writes the next line and takes the next future, and one timer for the keep-alive. No task, no
coroutine frame; the connection's own protocol object notices its loss and ends the stream.

Anything the door does not take (another path, a bad or missing token, odd parameters, a
request pipelined behind another) goes through the app as usual: the FastAPI route of
api.netmap_stream answers it (errors, or the same stream over ASGI).

A client that does not read its stream is cut off once `MAX_BUFFERED` bytes wait for it (the
transport would otherwise buffer every line for it); it reconnects with the version it holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..accounts import Accounts
from ..errors import ApiError
from ..netmap.stream import Stream, StreamHub, first_line, next_line
from ..protocol import KEEPALIVE_HEADER, KEEPALIVE_LINE, MEDIA_TYPE
from ..state import State
from ..transport.ratelog import RateLimitedLog
from .netmap import _parse
from .netmap_stream import PATH, hub_of, token_clock

MAX_BUFFERED = 4 * 1024 * 1024  # a full map of 10,000 peers fits
_PATH = PATH.encode()
_warn = RateLimitedLog(logging.getLogger("pcloud.server.netmap"))

Door = Callable[[bytes, bytes, list[tuple[bytes, bytes]], asyncio.Transport], Stream | None]


def _chunk(line: bytes) -> bytes:
    return b"%x\r\n%s\n\r\n" % (len(line) + 1, line)


def _head(keepalive_s: float) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ncache-control: no-store\r\n"
        b"%s: %g\r\ntransfer-encoding: chunked\r\n\r\n"
        % (MEDIA_TYPE.encode(), KEEPALIVE_HEADER.encode(), keepalive_s)
    )


class DirectStream(Stream):
    """One node's stream on one connection; see the module doc."""

    __slots__ = (
        "_state",
        "_hub",
        "_transport",
        "_token_left",
        "_since",
        "_written",
        "_timer",
        "_due",
    )

    def __init__(
        self,
        state: State,
        hub: StreamHub,
        node_id: int,
        transport: asyncio.Transport,
        token_left: Callable[[], float | None],
    ) -> None:
        super().__init__(node_id)
        self._state, self._hub, self._transport = state, hub, transport
        self._token_left = token_left
        self._since = 0
        self._written = 0.0
        # One keep-alive timer that outlives the wakes: a change moves the deadline later, so
        # the timer is left as it is and, when it fires early, set again (`_tick`); cancelling
        # and making one per wake cost two heap operations per node per change.
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0  # when `_timer` fires

    def start(self, since: int | None) -> None:
        state = self._state
        self._hub.add(self, state.settings.max_polls_per_node)
        state.poll_started(self.node_id)
        line, self._since = first_line(state, self.node_id, since)
        self._transport.write(_head(state.settings.stream_keepalive_s) + _chunk(line))
        self._written = asyncio.get_running_loop().time()
        self._arm()

    def _arm(self) -> None:
        left = self._token_left()
        if self.ended or (left is not None and left <= 0):
            self._finish()
            return
        fut = self._state.bus.waiter(self.node_id)
        if fut is None:
            self._finish()
            return
        self.fut = fut
        wake_at = self._wake_at(left)
        if self._timer is None or wake_at < self._due:
            self._set_timer(wake_at)
        fut.add_done_callback(self._woken)

    def _wake_at(self, left: float | None) -> float:
        """When to wake with nothing written: the keep-alive, or the token's expiry."""
        wake_at = self._written + self._state.settings.stream_keepalive_s
        if left is not None:
            wake_at = min(wake_at, asyncio.get_running_loop().time() + left)
        return wake_at

    def _set_timer(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(when, self._tick)
        self._due = when

    def _tick(self) -> None:
        """The timer: wake the stream if its deadline has come, else set it again for then."""
        self._timer = None
        fut = self.fut
        if fut is None or fut.done():
            return  # being woken already; `_arm` sets the timer again
        wake_at = self._wake_at(self._token_left())
        if wake_at <= asyncio.get_running_loop().time():
            fut.set_result(False)
        else:
            self._set_timer(wake_at)

    def _woken(self, fut: asyncio.Future[Any]) -> None:
        self.fut = None
        state = self._state
        state.bus.release(self.node_id, fut)
        try:
            if self._next(fut.result()):
                self._arm()
                return
        except Exception:
            # A bug must not leave the node without a stream while its client waits on it.
            logging.getLogger(__name__).exception("netmap stream of node %d failed", self.node_id)
        self._finish()

    def _next(self, result: bool | None) -> bool:
        """Write what the wake brought; False when the stream is over."""
        state, transport = self._state, self._transport
        if self.ended or result is None or state.draining or self.node_id not in state.nodes:
            return False
        if transport.is_closing():
            return False
        if transport.get_write_buffer_size() > MAX_BUFFERED:
            _warn.warning(
                "stream-slow-reader",
                "node %d does not read its netmap stream: closed it",
                self.node_id,
            )
            return False
        news = next_line(state, self.node_id, self._since)
        now = asyncio.get_running_loop().time()
        if news is not None:
            line, self._since = news
            transport.write(_chunk(line))
        elif now >= self._written + state.settings.stream_keepalive_s:
            transport.write(b"%x\r\n%s\r\n" % (len(KEEPALIVE_LINE), KEEPALIVE_LINE))
        else:
            return True  # woken early with nothing to say (the long poll's cap): wait on
        self._written = now
        return True

    def end(self) -> None:
        """End from outside: the node opened one stream too many, or the connection is gone."""
        self.ended = True
        fut = self.fut
        if fut is not None and not fut.done():
            fut.set_result(None)  # its callback finishes the stream
        elif fut is None:
            self._finish()

    def _finish(self) -> None:
        if self._transport is None:
            return
        transport, self._transport = self._transport, None  # type: ignore[assignment]
        self.ended = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._hub.remove(self)
        self._state.poll_ended(self.node_id)
        if not transport.is_closing():
            transport.write(b"0\r\n\r\n")  # a clean end: the client reconnects
            transport.close()


def door(app: Any) -> Door:
    """What the HTTP protocol calls with each request head it may hand over (see module doc)."""

    def open_stream(
        path: bytes, query: bytes, headers: list[tuple[bytes, bytes]], transport: asyncio.Transport
    ) -> Stream | None:
        if path != _PATH:
            return None
        parsed = _parse({"headers": headers, "query_string": query})
        state: State = app.state.pcloud
        if parsed is None or state.draining:
            return None
        token, since, _timeout = parsed
        accounts: Accounts = app.state.accounts
        try:
            node = accounts.node_for_token(token)
        except ApiError:
            return None  # the route answers the 401
        stream = DirectStream(
            state, hub_of(state), node.id, transport, token_clock(state, node.id, token)
        )
        stream.start(since)
        return stream

    return open_stream
