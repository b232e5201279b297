"""uvicorn's httptools protocol with the limits a server on the open internet needs.

uvicorn bounds neither the request head (httptools has no cap: 64 MiB of headers cost the server
1.3 GB) nor the time a connection may take to send it (its only timer is the keep-alive one,
armed after a response: a connection that never finishes its first head is held forever), and it
starts TLS inside `loop.create_server`, before the app's protocol learns who connected. So:

- TLS is started here, per connection (`loop.start_tls`), after `connection_made` of the plain
  TCP transport. That is where the peer's address is known, so the per-source cap refuses a
  connection at accept, before it costs a handshake;
- one deadline (`head_timeout_s` from accept) covers the TLS handshake and the first request
  head; each later head on a kept-alive connection gets the same budget from its first byte;
- a head larger than `MAX_HEAD_BYTES` or with more than `MAX_HEADERS` header lines is answered
  431 and the connection closed; httptools is fed at most one read past the limit.

Every refusal logs one rate-limited warning (ratelog.py). `guarded_protocol` binds the
settings into a class, which is what uvicorn's `Config(http=...)` takes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httptools
from uvicorn.config import SSL_PROTOCOL_VERSION, create_ssl_context

from .held import hold
from .idle import LeanIdle
from .ratelog import RateLimitedLog
from .sources import SourceGate, source_of

log = logging.getLogger("pcloud.server.transport")

# A poll's head is ~150 bytes and the largest legitimate one (a bearer token, a few standard
# headers) far below 1 KiB; 16 KiB and 100 headers are what h11 and common proxies allow.
MAX_HEAD_BYTES = 16 * 1024
MAX_HEADERS = 100
LINGER_S = 1.0  # after a 431, before closing


@dataclass(frozen=True)
class TransportLimits:
    head_timeout_s: float = 10.0
    max_connections_per_source: int = 1000  # 0: no cap
    max_head_bytes: int = MAX_HEAD_BYTES
    max_headers: int = MAX_HEADERS


def _plain_answer(status: int, reason: str, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, reason.encode()),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class _ConnState:
    """A connection's state for the limits (see `GuardedProtocol.__init__`)."""

    __slots__ = (
        "source",
        "raw",
        "head_timer",
        "in_head",
        "head_bytes",
        "header_count",
        "parsed_bytes",
        "refused",
        "handshake",
        "early",
        "lost",
        "direct",
        "upgraded",
    )

    def __init__(self) -> None:
        self.source: str | None = None
        self.raw: asyncio.Transport | None = None  # set until the HTTP layer runs
        self.head_timer: asyncio.TimerHandle | None = None
        self.in_head = True  # between the first byte of a request and its last header
        self.head_bytes = 0
        self.header_count = 0
        self.parsed_bytes = 0  # of the current head, as the parser reported it
        self.refused = False
        self.handshake: asyncio.Task[None] | None = None
        self.early: list[bytes] | None = None  # records that came before `_start_tls` resumed
        self.lost = False
        self.direct: Any = None  # a request taken over by `direct_door` (it owns the connection)
        self.upgraded = False  # a WebSocket now (the relay's TCP path) owns the connection


class GuardedProtocol(LeanIdle):
    """One connection; see the module doc. Class attributes are set by `guarded_protocol`."""

    tls: ClassVar[ssl.SSLContext | None] = None
    limits: ClassVar[TransportLimits] = TransportLimits()
    gate: ClassVar[SourceGate] = SourceGate(0)
    warn: ClassVar[RateLimitedLog] = RateLimitedLog(log)
    # Called with (path, query, headers, transport) at each GET head; what it returns (not None)
    # serves the request from here on, without an ASGI request (api.stream_direct).
    direct_door: ClassVar[Callable[..., Any] | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # One attribute, not eleven: CPython shares an instance dict's keys only up to 30
        # attributes; past it every connection pays for a dict of its own (+1.2 KiB each).
        self._g = _ConnState()

    # ---- accept, TLS, close ------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        # Called once, by the plain TCP transport at accept (start_tls never calls it again).
        source = self._g.source = source_of(transport.get_extra_info("peername"))
        if source is not None and not self.gate.admit(source):
            self._g.source = None
            self.warn.warning(
                "source-cap",
                "refused a connection from %s: it already holds %d (--max-connections-per-source)",
                source,
                self.limits.max_connections_per_source,
            )
            transport.abort()
            return
        self._g.raw = transport
        self._arm_head_timer()
        if self.tls is None:
            self._g.raw = None
            super().connection_made(transport)
            return
        # No byte may reach this protocol before the TLS layer takes the transport over.
        transport.pause_reading()
        self._g.handshake = self.loop.create_task(self._start_tls(transport))

    async def _start_tls(self, raw: Any) -> None:
        assert self.tls is not None
        try:
            transport = await self.loop.start_tls(
                raw,
                self,
                self.tls,
                server_side=True,
                ssl_handshake_timeout=self.limits.head_timeout_s,
            )
        except (TimeoutError, OSError, ssl.SSLError):
            # A failed or timed-out handshake, or the head timer aborted it: nothing to answer.
            raw.abort()
            self._closed()
            return
        except asyncio.CancelledError:  # the server is stopping
            raw.abort()
            self._closed()
            raise
        finally:
            self._g.handshake = None
        if self._g.raw is None or transport is None or self._g.lost:
            # The timer fired as the handshake ended, or the peer left right after it.
            raw.abort()
            self._closed()
            return
        self._g.raw = None
        super().connection_made(transport)
        # The first records come as soon as the handshake ends: they waited in `_g.early`.
        early, self._g.early = self._g.early or [], None
        for data in early:
            self.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._g.lost = True
        if self._g.direct is not None:
            self._g.direct.end()
        established = self.transport is not None
        self._closed()
        if established:
            super().connection_lost(exc)

    def pause_writing(self) -> None:
        if self.transport is not None and self.flow is not None:
            super().pause_writing()

    def resume_writing(self) -> None:
        if self.transport is not None and self.flow is not None:
            super().resume_writing()

    def _closed(self) -> None:
        if self._g.head_timer is not None:
            self._g.head_timer.cancel()
            self._g.head_timer = None
        if self._g.source is not None:
            self.gate.release(self._g.source)
            self._g.source = None

    # ---- the head deadline --------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        if self._g.head_timer is None:
            self._g.head_timer = self.loop.call_later(self.limits.head_timeout_s, self._head_late)

    def _between_requests(self) -> bool:
        if self._g.direct is not None or self._g.upgraded:
            return False  # a taken-over request or a WebSocket lasts as long as the connection
        return not self._g.in_head and (self.cycle is None or self.cycle.response_complete)

    def _head_late(self) -> None:
        self._g.head_timer = None
        if not (self._g.in_head or self._between_requests()):
            return  # a request is being served: its time is the app's business
        self.warn.warning(
            "head-timeout",
            "closed a connection from %s that sent no complete request head within %g s",
            self._g.source or "?",
            self.limits.head_timeout_s,
        )
        if self._g.raw is not None:
            raw, self._g.raw = self._g.raw, None
            raw.abort()  # still in the TLS handshake: `_start_tls` cleans up
        elif self.transport is not None:
            self.transport.abort()

    def handle_websocket_upgrade(self) -> None:
        # The WebSocket protocol takes the transport: its bytes and its `connection_lost` go
        # there, not here. No head deadline then (it cut every relay WebSocket 10 s in), and the
        # source's count is given back when the WebSocket's connection ends, not never.
        self._g.upgraded = True
        super().handle_websocket_upgrade()
        ws = self.transport.get_protocol()
        ws_lost = ws.connection_lost

        def connection_lost(exc: Exception | None) -> None:
            try:
                ws_lost(exc)
            finally:
                self._closed()

        ws.connection_lost = connection_lost  # type: ignore[method-assign]

    # ---- the head's size and header count -----------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.transport is None:  # TLS is up, `_start_tls` has not resumed yet
            if self._g.early is None:
                self._g.early = []
            self._g.early.append(data)
            return
        if self._g.refused or self._g.direct is not None:
            return  # (a taken-over request reads nothing more: what comes is dropped)
        super().data_received(data)
        if self._g.direct is not None:
            self.parser = None  # type: ignore[assignment]  # (taken over: it and this go)
        elif self._g.in_head and not self._g.refused:
            # A head still incomplete after this read: the whole read counts (httptools holds a
            # partial header in memory), so the parser never holds more than one read past
            # the limit.
            self._g.head_bytes += len(data)
            if self._g.head_bytes > self.limits.max_head_bytes:
                self._refuse_head(
                    f"the request head is larger than {self.limits.max_head_bytes} bytes"
                )
        elif self._between_requests():
            # Bytes that start no request (blank lines) must not keep a connection forever.
            self._arm_head_timer()

    def on_message_begin(self) -> None:
        self._g.in_head = True
        self._g.head_bytes = 0
        self._g.parsed_bytes = 0
        self._g.header_count = 0
        self._arm_head_timer()
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._g.parsed_bytes += len(url)
        if self._g.parsed_bytes > self.limits.max_head_bytes:
            self._refuse_head(f"the request head is larger than {self.limits.max_head_bytes} bytes")
        elif not self._g.refused:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # A head that arrives in one read is only seen here, piece by piece.
        self._g.header_count += 1
        self._g.parsed_bytes += len(name) + len(value) + 4
        if self._g.header_count > self.limits.max_headers:
            self._refuse_head(f"the request has more than {self.limits.max_headers} headers")
        elif self._g.parsed_bytes > self.limits.max_head_bytes:
            self._refuse_head(f"the request head is larger than {self.limits.max_head_bytes} bytes")
        elif not self._g.refused:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._g.refused:
            return
        self._g.in_head = False
        if self._g.head_timer is not None:
            self._g.head_timer.cancel()
            self._g.head_timer = None
        if self.direct_door is not None and self._take_over():
            return
        super().on_headers_complete()

    def _take_over(self) -> bool:
        """Offer a plain GET (HTTP/1.1, nothing in flight before it) to `direct_door`."""
        if self.parser.get_method() != b"GET" or self.parser.get_http_version() != "1.1":
            return False
        if self.cycle is not None and not self.cycle.response_complete:
            return False
        url = httptools.parse_url(self.url)
        assert self.direct_door is not None
        taken = self.direct_door(url.path, url.query or b"", self.headers, self.transport)
        if taken is None:
            return False
        self._g.direct = taken
        # The connection serves nothing else now: a small protocol takes this one's place and
        # its source's count (held.py); this one goes once the parser lets go (`data_received`).
        source, self._g.source = self._g.source, None
        hold(self, self.transport, taken, self.connections, self.gate, source)
        return True

    def on_body(self, body: bytes) -> None:
        if not self._g.refused and self.cycle is not None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._g.refused and self._g.direct is None and self.cycle is not None:
            super().on_message_complete()

    def _refuse_head(self, message: str) -> None:
        if self._g.refused:
            return
        self._g.refused = True
        self.warn.warning(
            "head-too-large", "answered 431 to %s: %s", self._g.source or "?", message
        )
        self.transport.write(
            _plain_answer(431, "Request Header Fields Too Large", "header_too_large", message)
        )
        # Close a moment later, reading and dropping what still comes meanwhile: closing at
        # once while the client is still sending makes the kernel answer with a reset, and a
        # reset can destroy the 431 before the client has read it.
        self.loop.call_later(LINGER_S, self.transport.close)


def guarded_protocol(
    tls: ssl.SSLContext | None,
    limits: TransportLimits,
    *,
    gate: SourceGate | None = None,
    direct_door: Callable[..., Any] | None = None,
) -> type[GuardedProtocol]:
    """A `GuardedProtocol` class for one server: its TLS context, limits and source counts."""
    attrs = {
        "direct_door": staticmethod(direct_door) if direct_door is not None else None,
        "tls": tls,
        "limits": limits,
        "gate": gate if gate is not None else SourceGate(limits.max_connections_per_source),
        "warn": RateLimitedLog(log),
    }
    return type("PcloudHttpProtocol", (GuardedProtocol,), attrs)


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The server's TLS context, built as uvicorn builds it from `ssl_certfile`/`ssl_keyfile`."""
    return create_ssl_context(
        certfile=str(cert),
        keyfile=str(key),
        password=None,
        ssl_version=SSL_PROTOCOL_VERSION,
        cert_reqs=ssl.CERT_NONE,
        ca_certs=None,
        ciphers=None,
    )
