"""Builds the coordination server's FastAPI app from settings (a factory: nothing at import time)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, cast

from fastapi import FastAPI

from . import __version__
from .accounts import Accounts
from .api import accounts as accounts_routes
from .api import acl, cluster, cluster_ca, install, meta, netmap, netmap_stream, nodes, welcome
from .config import Settings
from .errors import install_handlers
from .layout import DB_NAME
from .metrics import Metrics
from .middleware import LimitAndMeasure
from .reach.service import Reach
from .relay import service as relay_service
from .relay.core import Relay
from .security.tls import TlsFiles, ensure_ca
from .state import State
from .store.base import Store
from .store.sqlite import SqliteStore

if TYPE_CHECKING:  # (imported when used: the etcd store's modules bring httpx)
    from .sync import StoreSync

PURGE_EVERY_S = 3600.0
log = logging.getLogger("pcloud.server")


async def purge_tokens(accounts: Accounts, every_s: float = PURGE_EVERY_S) -> None:
    """Delete expired user tokens now and then (each login adds one; expired ones only 401)."""
    while True:
        try:
            await accounts.purge_expired()
        except Exception:  # noqa: BLE001 - a store hiccup: try again next round
            log.warning("purging expired tokens failed; retrying later", exc_info=True)
        await asyncio.sleep(every_s)  # a period, not synchronisation


class StoreMismatch(ValueError):
    """The settings point at an empty etcd store while this state dir holds a SQLite one."""


def open_store(settings: Settings) -> Store:
    settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if settings.store == "etcd":
        # Imported here: the etcd client brings httpx (~4.5 MB a SQLite server never needs).
        from .store.etcd import EtcdStore

        return EtcdStore(
            settings.etcd_endpoints,
            ca_file=settings.etcd_ca,
            cert_file=settings.etcd_cert,
            key_file=settings.etcd_key,
        )
    return SqliteStore(settings.state_dir / DB_NAME)


def open_state(settings: Settings) -> State:
    store = open_store(settings)
    state = State(settings, store)
    db = settings.state_dir / DB_NAME
    if settings.store == "etcd" and not state.users and not state.nodes and db.exists():
        local = SqliteStore(db)
        try:
            held = local.load()
        finally:
            local.close()
        if held.records["user"] or held.records["node"]:
            state.close()
            # Starting on the empty store would hand out a new setup code and addresses that
            # clash with the devices this state dir already knows.
            raise StoreMismatch(
                f"the etcd store is empty but {db} holds this network's state: migrate it "
                "first (server.store.migrate), then start with --store etcd"
            )
    return state


def create_app(
    settings: Settings,
    *,
    state: State | None = None,
    local_admin: bool = False,
    relay: Relay | None = None,
) -> FastAPI:
    """The HTTP app over `state` (opened from the settings when not given).

    `local_admin` makes every caller an admin: only for the Unix socket in the state dir that
    `pcloud-server admin` uses, which only root on the server can reach.
    """
    state = state or open_state(settings)
    files = TlsFiles.in_dir(settings.state_dir)
    ensure_ca(files)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sync: StoreSync | None = None
        purge: asyncio.Task[None] | None = None
        relay_sockets: list[relay_service.RelaySocket] = []
        if not local_admin:
            await app.state.reach.start()
            purge = asyncio.create_task(purge_tokens(app.state.accounts))
            if state.store_kind == "etcd":
                from .store.etcd import EtcdStore  # (only here: it brings httpx along)
                from .sync import StoreSync

                # No startup sweep of ephemeral nodes here: they may be polling another
                # server right now, and presence is per server; one that goes offline on
                # this server gets its timer then.
                # Watch right away: the load's revision is where the watch resumes.
                sync = StoreSync(state, cast(EtcdStore, state.store))
                sync.start()
            else:
                state.sweep_offline_ephemeral()
                await state.publish_self()
            relay_sockets = await relay_service.start(app)
        yield
        if not local_admin:
            relay_service.stop(relay_sockets)
        if purge is not None:
            purge.cancel()
        if sync is not None:
            await sync.stop()
        await app.state.reach.stop()
        await asyncio.sleep(0)

    app = FastAPI(
        title="PCloud coordination server",
        version=__version__,
        lifespan=lifespan,
        # Closed by default on a server reachable from the network (Settings.docs_open): the
        # schema is a map of every route, and the docs page loads scripts from a CDN.
        docs_url="/docs" if settings.docs_open else None,
        redoc_url="/redoc" if settings.docs_open else None,
        openapi_url="/openapi.json" if settings.docs_open else None,
    )
    app.state.pcloud = state
    app.state.settings = settings
    app.state.accounts = Accounts(state)
    app.state.ca_pem = files.ca_cert.read_bytes()
    app.state.local_admin = local_admin
    app.state.reach = Reach(settings, state)  # public URLs, address echo (DESIGN section 9)
    metrics = Metrics()
    app.state.metrics = metrics
    relay_service.attach(app, settings, relay)
    install_handlers(app)
    for module in (
        accounts_routes,
        nodes,
        cluster,
        cluster_ca,
        netmap,
        netmap_stream,
        acl,
        meta,
        welcome,
        install,
    ):
        app.include_router(module.router)
    # The admin socket (root only) always has them: an operator on the server may read what
    # the network may not.
    if settings.metrics_open or local_admin:
        app.include_router(meta.metrics_router)
    # Inside LimitAndMeasure (added after it, so outside of it in the stack): polls it serves
    # are still limited and counted.
    app.add_middleware(netmap.NetmapFastPath)
    app.add_middleware(LimitAndMeasure, max_body=settings.max_body_bytes, metrics=metrics)
    return app
