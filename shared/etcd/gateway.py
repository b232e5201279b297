"""A small client for etcd's v3 JSON gateway: endpoint failover, TLS, capped in-flight calls.

Why the gateway over httpx rather than a gRPC client (research/etcd.md sections 4 and 9): it needs
no grpcio/protobuf stack (python-etcd3 breaks on current protobuf), the maintained async gRPC client
(aetcd) has one endpoint per client, and PCloud wants to own failover, `hasleader` and batching.
httpx is the bottleneck at high concurrency, so calls are capped (a semaphore, 8 by default) and the
store batches related writes into one transaction.

Every call is a POST of JSON to `/v3/...`; keys and values are base64 and int64 fields come back
as strings with protobuf defaults omitted (`b64`, `unb64`, `as_int` deal with that).
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from pcloud.shared.errors import StoreError, Unavailable

DEFAULT_TIMEOUT_S = 1.0
DEFAULT_MAX_IN_FLIGHT = 8


class GatewayError(StoreError):
    """etcd answered with an error that another endpoint would repeat (a 4xx: bad request,
    too many ops in a txn, a compacted revision)."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(f"etcd {status} (code {code}): {message}")
        self.status = status
        self.code = code
        self.message = message


def b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def unb64(data: str | None) -> bytes:
    return base64.b64decode(data) if data else b""


def as_int(value: Any) -> int:
    """int64 fields arrive as strings, and are absent when zero."""
    return int(value) if value is not None else 0


def prefix_end(prefix: str | bytes) -> bytes:
    """The range_end that selects every key starting with `prefix` (last byte + 1)."""
    raw = bytearray(prefix.encode() if isinstance(prefix, str) else prefix)
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\0"


def ssl_context(
    ca_file: Path | None, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext | bool:
    if ca_file is None:
        return True
    ctx = ssl.create_default_context(cafile=str(ca_file))
    if cert_file is not None:
        ctx.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    return ctx


def _error_of(resp: httpx.Response) -> tuple[int, str]:
    try:
        body = resp.json()
    except ValueError:
        return 0, resp.text[:200]
    err = body.get("error")
    if isinstance(err, dict):  # the watch stream's shape
        return as_int(err.get("grpc_code")), str(err.get("message", ""))
    return as_int(body.get("code")), str(body.get("message") or err or "")


def _retryable(resp: httpx.Response) -> bool:
    # 5xx: this member has no leader, timed out on a proposal or is shutting down; another
    # member may well answer. A 4xx would be the same everywhere.
    return resp.status_code >= 500


def _decode(resp: httpx.Response) -> Any:
    if resp.status_code != 200:
        code, message = _error_of(resp)
        raise GatewayError(resp.status_code, code, message)
    return resp.json()


class _Attempts:
    """One call's pass over the endpoints (sync and async alike): the URL to try next, what
    came of each try, and the answer or why there is none."""

    def __init__(self, gateway: Gateway, path: str) -> None:
        self.gateway = gateway
        self.path = path
        self.endpoint = ""
        self.last = "no endpoint tried"
        self.answer: httpx.Response | None = None

    def __iter__(self) -> Iterator[str]:
        for endpoint in self.gateway._urls():
            self.endpoint = endpoint
            yield endpoint + self.path
            if self.answer is not None:
                return

    def took(self, resp: httpx.Response) -> None:
        if _retryable(resp):
            self.last = f"{self.endpoint}: HTTP {resp.status_code} {_error_of(resp)[1]}"
        else:
            self.gateway._answered(self.endpoint)
            self.answer = resp

    def failed(self, exc: httpx.TransportError) -> None:
        self.last = f"{self.endpoint}: {type(exc).__name__} {exc}"

    def result(self) -> Any:
        if self.answer is None:
            raise Unavailable(f"etcd unavailable ({self.last})")
        return _decode(self.answer)


class Gateway:
    """POST JSON to the first endpoint that answers, rotating on connect errors, timeouts and 5xx.

    The endpoint that last answered is tried first next time. Retrying a call that timed out may
    repeat it; the store only sends guarded or idempotent transactions, so that is safe.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self._verify = ssl_context(ca_file, cert_file, key_file)
        self._preferred = 0
        self._max_in_flight = max_in_flight
        self._sync_slots = threading.BoundedSemaphore(max_in_flight)
        self._client: httpx.Client | None = None
        # The async client and semaphore belong to one event loop; remade if the loop changes.
        self._aclient: httpx.AsyncClient | None = None
        self._aslots: asyncio.Semaphore | None = None
        self._aloop: asyncio.AbstractEventLoop | None = None

    # httpx pools are sized to the cap: more connections only add CPU (research/etcd.md 6).
    def _limits(self) -> httpx.Limits:
        return httpx.Limits(max_connections=self._max_in_flight + 2, max_keepalive_connections=8)

    def order(self) -> list[int]:
        n = len(self.endpoints)
        return [(self._preferred + i) % n for i in range(n)]

    def _urls(self) -> list[str]:
        """The endpoints in the order to try them, as one snapshot: `set_endpoints` may swap
        the list while a call is in flight (in another thread or task)."""
        urls, n = self.endpoints, len(self.endpoints)
        first = self._preferred % n
        return urls[first:] + urls[:first]

    def set_endpoints(self, endpoints: Sequence[str]) -> bool:
        """Talk to these endpoints from now on (the cluster's membership changed); the one
        that last answered stays preferred if it is still listed. True if anything changed."""
        new = [e.rstrip("/") for e in endpoints]
        if not new or new == self.endpoints:
            return False
        current = self.endpoints[self._preferred % len(self.endpoints)]
        self._preferred = new.index(current) if current in new else 0
        self.endpoints = new
        return True

    def _answered(self, url: str) -> None:
        if url in self.endpoints:
            self._preferred = self.endpoints.index(url)

    def _sync(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(verify=self._verify, limits=self._limits())
        return self._client

    def _async(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._aclient is None or self._aslots is None or self._aloop is not loop:
            # A client made on another (closed) loop cannot be reused; drop it unclosed.
            self._aclient = httpx.AsyncClient(verify=self._verify, limits=self._limits())
            self._aslots = asyncio.Semaphore(self._max_in_flight)
            self._aloop = loop
        return self._aclient, self._aslots

    def call(self, path: str, body: dict[str, Any], *, timeout: float | None = None) -> Any:
        """One unary call; returns the decoded JSON answer."""
        with self._sync_slots:
            client, attempts = self._sync(), _Attempts(self, path)
            for url in attempts:
                try:
                    attempts.took(client.post(url, json=body, timeout=timeout or self.timeout))
                except httpx.TransportError as exc:
                    attempts.failed(exc)
            return attempts.result()

    async def acall(self, path: str, body: dict[str, Any], *, timeout: float | None = None) -> Any:
        """`call` for the event loop."""
        client, slots = self._async()
        attempts = _Attempts(self, path)
        async with slots:
            for url in attempts:
                try:
                    resp = await client.post(url, json=body, timeout=timeout or self.timeout)
                except httpx.TransportError as exc:
                    attempts.failed(exc)
                    continue
                attempts.took(resp)
        return attempts.result()

    @asynccontextmanager
    async def stream(
        self, endpoint_index: int, path: str, body: dict[str, Any], *, idle_timeout: float
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """A streaming call (the watch) on one endpoint: yields an iterator of JSON lines.

        It does not hold an in-flight slot: a watch lives for hours. `idle_timeout` bounds the
        silence between lines, which progress notifications keep short while the stream is sound.
        `Grpc-Metadata-hasleader` makes a member that lost its leader end the stream instead of
        going silent (research/etcd.md 5).
        """
        client, _ = self._async()
        url = self.endpoints[endpoint_index % len(self.endpoints)] + path
        timeout = httpx.Timeout(self.timeout, read=idle_timeout)
        headers = {"Grpc-Metadata-hasleader": "true"}
        async with client.stream("POST", url, json=body, timeout=timeout, headers=headers) as resp:
            if resp.status_code != 200:
                await resp.aread()
                code, message = _error_of(resp)
                raise GatewayError(resp.status_code, code, message)

            async def lines() -> AsyncIterator[dict[str, Any]]:
                async for line in resp.aiter_lines():
                    if line.strip():
                        yield json.loads(line)

            yield lines()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        if self._aclient is not None and self._aloop is asyncio.get_running_loop():
            await self._aclient.aclose()
        self._aclient = None
        self._aslots = None
        self._aloop = None
        self.close()
