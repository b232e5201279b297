"""Builds the coordination server's FastAPI app from settings (a factory: nothing at import time)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from . import __version__
from .accounts import Accounts
from .api import accounts as accounts_routes
from .api import acl, cluster, meta, netmap, nodes
from .config import Settings
from .errors import install_handlers
from .metrics import Metrics
from .middleware import LimitAndMeasure
from .security.tls import TlsFiles, ensure_ca
from .state import State
from .store.sqlite import SqliteStore


def open_state(settings: Settings) -> State:
    settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return State(settings, SqliteStore(settings.state_dir / "pcloud.db"))


def create_app(
    settings: Settings, *, state: State | None = None, local_admin: bool = False
) -> FastAPI:
    """The HTTP app over `state` (opened from the settings when not given).

    `local_admin` makes every caller an admin: only for the Unix socket in the state dir that
    `pcloud-server admin` uses, which only root on the server can reach.
    """
    state = state or open_state(settings)
    files = TlsFiles.in_dir(settings.state_dir)
    ensure_ca(files)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not local_admin:
            state.sweep_offline_ephemeral()
        yield
        await asyncio.sleep(0)

    app = FastAPI(
        title="PCloud coordination server",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.pcloud = state
    app.state.accounts = Accounts(state)
    app.state.ca_pem = files.ca_cert.read_bytes()
    app.state.local_admin = local_admin
    metrics = Metrics()
    app.state.metrics = metrics
    install_handlers(app)
    for module in (accounts_routes, nodes, cluster, netmap, acl, meta):
        app.include_router(module.router)
    # Inside LimitAndMeasure (added after it, so outside of it in the stack): polls it serves
    # are still limited and counted.
    app.add_middleware(netmap.NetmapFastPath)
    app.add_middleware(LimitAndMeasure, max_body=settings.max_body_bytes, metrics=metrics)
    return app
