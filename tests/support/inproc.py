"""The coordination server's app in this process, for API tests that need no real process.

`CoordApp` builds the FastAPI app with `create_app(settings)` over a real SQLite file in a state
dir, runs its lifespan on an event loop of its own (one thread), and hands out httpx clients whose
transport is `httpx.ASGITransport` on that loop: no port, no TLS, no subprocess (~0.1 s to start
instead of ~4.5 s). It offers the same helpers as the subprocess tier (`tests.support.coord
.CoordServer`: setup_admin, create_user, auth_key, proof, client(token), async_client(token)), so
a test switches tiers by the fixture it takes.

What it cannot show, and what stays on the subprocess tier: TLS and CA pinning, a restart of
the process itself (`restart` here loads a new app and state from the same state dir), the
drain on stop, logs and stdout, source addresses (ASGITransport reports one fixed client
address, so per-source rate limits and trusted proxies), streaming and slow clients (the
transport buffers each whole request and response).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from pcloud.server.app import create_app
from pcloud.server.config import Listen, Settings
from pcloud.server.security.tls import TlsFiles, ensure_leaf, fingerprint
from pcloud.server.state import State
from tests.support.coord import ApiHelpers

T = TypeVar("T")

# Where clients address the app; nothing listens there (the transport calls the app directly).
BASE_URL = "https://127.0.0.1:8443"
# As the subprocess tier starts its servers (`--offline-grace 0.5`): presence tests stay short.
DEFAULTS: dict[str, Any] = {
    "listen": (Listen("127.0.0.1", 8443),),
    "offline_grace_s": 0.5,
    "relay_port": 0,  # no UDP socket: nothing listens for this tier (the relay is called directly)
}


class LoopThread:
    """An event loop running in a daemon thread; coroutines are submitted to it from any thread.

    The app's state (the change bus's events, the lifespan's tasks) belongs to one loop, so every
    request, from sync and async clients alike, runs on this one.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="coord-app", daemon=True)
        self.thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 60) -> T:
        return self.submit(coro).result(timeout)

    def close(self) -> None:
        async def cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # The password hashes' worker threads end with the loop, not with the test run.
            await self.loop.shutdown_default_executor()

        self.run(cancel_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def _call(asgi: httpx.ASGITransport, request: httpx.Request, body: bytes) -> httpx.Response:
    """One request through the app; the answer read whole (raw: the client decodes it)."""
    inner = httpx.Request(request.method, request.url, headers=request.headers, content=body)
    response = await asgi.handle_async_request(inner)
    raw = b"".join([chunk async for chunk in response.stream])  # type: ignore[union-attr]
    return httpx.Response(
        response.status_code,
        headers=response.headers,
        stream=httpx.ByteStream(raw),
        extensions=response.extensions,
    )


def _deadline(request: httpx.Request) -> float | None:
    """The client's read timeout plus a margin: a request the app never answers fails the test."""
    read = request.extensions.get("timeout", {}).get("read")
    return None if read is None else float(read) + 5


class _SyncTransport(httpx.BaseTransport):
    def __init__(self, asgi: httpx.ASGITransport, loop: LoopThread) -> None:
        self.asgi, self.loop = asgi, loop

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        return self.loop.submit(_call(self.asgi, request, body)).result(_deadline(request))


class _AsyncTransport(httpx.AsyncBaseTransport):
    def __init__(self, asgi: httpx.ASGITransport, loop: LoopThread) -> None:
        self.asgi, self.loop = asgi, loop

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        future = asyncio.wrap_future(self.loop.submit(_call(self.asgi, request, body)))
        return await asyncio.wait_for(future, _deadline(request))


@dataclass
class CoordApp(ApiHelpers):
    """One coordination server app over `state_dir`, its lifespan running (see module doc)."""

    state_dir: Path
    settings: Settings
    setup_code: str | None = None
    join_link: str = ""
    _loop: LoopThread | None = None
    _lifespan: contextlib.AbstractAsyncContextManager[Any] | None = None
    _asgi: httpx.ASGITransport | None = None
    _admin_asgi: httpx.ASGITransport | None = None
    _state: State | None = field(default=None, repr=False)

    url = BASE_URL

    @property
    def fingerprint(self) -> str:
        return self.join_link.rpartition("sha256:")[2]

    @property
    def state(self) -> State:
        """The server's state, for assertions about what it holds (read from the test's thread
        only while no request runs)."""
        assert self._state is not None, "not started"
        return self._state

    def start(self) -> CoordApp:
        # As `pcloud-server` prepares before serving (server.serve.serve).
        app = create_app(self.settings)
        self._state = app.state.pcloud
        files = TlsFiles.in_dir(self.settings.state_dir)
        ensure_leaf(files, self.settings.cert_names())
        self.setup_code = app.state.accounts.ensure_setup_code()
        self.join_link = f"{self.url}/#fp=sha256:{fingerprint(files.ca_cert.read_bytes())}"
        self._loop = LoopThread()
        self._lifespan = app.router.lifespan_context(app)
        self._loop.run(self._lifespan.__aenter__())
        self._asgi = httpx.ASGITransport(app=app)
        # The admin socket's app, over the same state as `serve` builds it (no lifespan).
        admin_app = create_app(self.settings, state=self._state, local_admin=True)
        self._admin_asgi = httpx.ASGITransport(app=admin_app)
        return self

    def restart(self) -> CoordApp:
        """A new app and state over the same state dir, as a restarted `pcloud-server` would
        load them (what a change left in the store, and the work its lifespan does at start)."""
        self.stop()
        return self.start()

    def stop(self) -> None:
        if self._loop is None:
            return
        if self._lifespan is not None:
            self._loop.run(self._lifespan.__aexit__(None, None, None))
        self._loop.close()
        self.state.close()
        self._loop = self._lifespan = self._asgi = self._admin_asgi = None

    # ---- clients, as CoordServer's ----------------------------------------------------------

    def client(self, token: str | None = None, timeout: float = 30) -> httpx.Client:
        assert self._asgi is not None and self._loop is not None, "not started"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(
            base_url=self.url,
            transport=_SyncTransport(self._asgi, self._loop),
            headers=headers,
            timeout=timeout,
        )

    def admin_client(self) -> httpx.Client:
        """A client of the admin socket's app: every caller an admin, as root on the server."""
        assert self._admin_asgi is not None and self._loop is not None, "not started"
        transport = _SyncTransport(self._admin_asgi, self._loop)
        return httpx.Client(base_url="http://admin", transport=transport, timeout=30)

    def async_client(self, token: str | None = None, timeout: float = 90) -> httpx.AsyncClient:
        assert self._asgi is not None and self._loop is not None, "not started"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(
            base_url=self.url,
            transport=_AsyncTransport(self._asgi, self._loop),
            headers=headers,
            timeout=timeout,
        )


def start_app(state_dir: Path, **settings: Any) -> CoordApp:
    """A started `CoordApp` over `state_dir`; `settings` are `Settings` fields (e.g.
    network="10.9.0.0/29", token_ttl_s=3), over the subprocess tier's defaults."""
    full = Settings(state_dir=state_dir, **{**DEFAULTS, **settings})
    return CoordApp(state_dir, full).start()


@contextlib.contextmanager
def app_client(state_dir: Path, **settings: Any) -> Iterator[CoordApp]:
    """`start_app(...)`, stopped on the way out."""
    app = start_app(state_dir, **settings)
    try:
        yield app
    finally:
        app.stop()
