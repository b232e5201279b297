"""Serve the coordination API: TLS material, the state, HTTPS listeners and the admin socket.

One process holds ~10,000 idle TLS long polls (DESIGN section 7): `tune_runtime` sets the
process-wide knobs for that, and `DrainingServer` answers the held polls when stopping.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
from pathlib import Path
from typing import Any

import uvicorn
from websockets.exceptions import InvalidState

from .accounts import Accounts
from .api.install import install_info, install_line
from .api.stream_direct import door as stream_door
from .app import create_app, open_state
from .config import Listen, Settings
from .layout import admin_socket, setup_code_file
from .reach.public import public_cert_names
from .security.tls import TlsFiles, ensure_ca, ensure_leaf, fingerprint
from .state import State
from .transport.fds import raise_open_files_limit
from .transport.lean_tls import install as install_lean_tls
from .transport.options import transport_limits
from .transport.protocol import guarded_protocol, tls_context


def under_systemd() -> bool:
    """Whether stdout goes to the journal (systemd sets these for a service's processes)."""
    return bool(os.environ.get("INVOCATION_ID") or os.environ.get("JOURNAL_STREAM"))


# Bytes asyncio's TLS transport reads from a socket at a time: a poll or a registration is a
# few hundred bytes, and every connection keeps a buffer this size (see tune_runtime).
SSL_READ_BUFFER = 1024
# Allocations (less deallocations) between two young-generation collections (default 700).
GC_THRESHOLD = 20_000


def tune_runtime() -> None:
    """Process-wide settings for holding ~10,000 idle TLS connections (DESIGN section 7)."""
    # asyncio's SSLProtocol allocates a zeroed read buffer of `max_size` (256 KiB) per
    # connection: 2.5 GB at 10,000 long polls. One TLS record is at most 16 KiB, so a larger
    # buffer only saves read calls on bulk transfers, which this server does not have. The
    # lean protocol shares one buffer between connections and keeps its dict small
    # (transport/lean_tls.py); if this Python's SSLProtocol differs, only the size is set (a
    # private attribute, hence the hasattr guard).
    import asyncio.sslproto

    if not install_lean_tls(SSL_READ_BUFFER) and hasattr(asyncio.sslproto.SSLProtocol, "max_size"):
        asyncio.sslproto.SSLProtocol.max_size = SSL_READ_BUFFER
    # The heap holds ~100 objects per connected node that live as long as the connection; with
    # the default thresholds the cyclic GC walked them over and over while 10,000 answers went
    # out (a quarter of a fan-out's CPU in a profile). Collect young objects less often; the
    # modules, app and state loaded at start are frozen out of collections in `serve`.
    gc.set_threshold(GC_THRESHOLD, 20, 20)


class DrainingServer(uvicorn.Server):
    """uvicorn's server that, when stopping, answers the held long polls instead of letting the
    graceful-shutdown timeout cut them off with a 500.

    uvicorn first stops listening and marks every connection to close after its current
    response; the polls are released right after that (a callback that runs during its first
    await), so clients get a normal "nothing changed" answer and reconnect to another server.
    """

    def __init__(self, config: uvicorn.Config, state: State) -> None:
        super().__init__(config)
        self.pcloud_state = state

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.pcloud_state.draining = True
        asyncio.get_running_loop().call_soon(self.pcloud_state.bus.wake_all)
        for connection in self.server_state.connections:
            _close_quietly(connection)
        await super().shutdown(sockets=sockets)


def _close_quietly(connection: Any) -> None:
    """Guard a connection's shutdown against a relay WebSocket the peer is closing.

    uvicorn's sans-I/O WebSocket sends a close frame at shutdown unless it sent one itself; when
    the peer's close came first, websockets refuses a second one (InvalidState) and the error
    ended the server's shutdown with a traceback (seen in CI while a backend left the relay as
    the server stopped). That connection is ending anyway: close its transport."""
    original = connection.shutdown

    def shutdown() -> None:
        try:
            original()
        except InvalidState:
            connection.transport.close()

    connection.shutdown = shutdown


def bind_tcp(listen: Listen) -> socket.socket:
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only when the listening
    # socket says TCP, and without it every answer with a body waits ~40 ms (uvicorn writes the
    # head and the body separately: Nagle holds the body until the head is acknowledged).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((listen.host, listen.port))
    sock.set_inheritable(True)
    return sock


def bind_admin_socket(path: Path) -> socket.socket:
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return sock


async def serve(settings: Settings) -> None:
    tune_runtime()
    raise_open_files_limit()
    # The first load (a range over etcd) blocks; nothing else runs in this loop yet.
    state = open_state(settings)
    files = TlsFiles.in_dir(settings.state_dir)
    ensure_ca(files)
    ensure_leaf(files, settings.cert_names() + public_cert_names(state))  # every public host
    code = Accounts(state).ensure_setup_code()
    fp = fingerprint(files.ca_cert.read_bytes())
    urls = settings.server_urls() or [f"https://{settings.hostname}:{settings.listen[0].port}"]
    # The join link and setup code go to stdout for the person starting the server, never to
    # the log: the setup code is a secret until the first admin exists.
    print(f"PCloud coordination server {settings.network}", flush=True)
    print(f"join link: {urls[0]}/#fp=sha256:{fp}", flush=True)
    if settings.public_url and settings.public_url != urls[0]:
        print(f"join link (public): {settings.public_url}/#fp=sha256:{fp}", flush=True)
    info = install_info(settings)
    print(f"install line: {install_line(info['base_url'], info['pin'])}", flush=True)
    if code and under_systemd():
        # Under systemd stdout is the journal, which more people read than the state dir.
        print(f"setup code: in {setup_code_file(settings.state_dir)} (0600)", flush=True)
    elif code:
        print(f"setup code: {code}  (also in {setup_code_file(settings.state_dir)})", flush=True)

    app = create_app(settings, state=state)
    admin_app = create_app(settings, state=state, local_admin=True, relay=app.state.relay)
    sockets = [bind_tcp(lst) for lst in settings.listen]
    tls = app.state.reach.tls_context = tls_context(files.cert, files.key)  # a re-issue reloads
    await app.state.reach.start_echo()
    config = uvicorn.Config(
        app,
        # TLS, head limits and connection caps live in the protocol (server/transport).
        http=guarded_protocol(
            tls,
            transport_limits(settings),
            direct_door=stream_door(app),  # held netmap streams skip ASGI
        ),
        ws="websockets-sansio",  # the relay's WebSocket (server.relay.routes)
        ws_max_size=64 * 1024,
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",
        timeout_keep_alive=75,
        # Long polls hold requests open for up to a minute; on stop, don't wait for them: the
        # clients re-poll (another server, or this one after its restart) on their own.
        timeout_graceful_shutdown=1,
        lifespan="on",
        # X-Forwarded-For is read only from --trusted-proxy peers (api.deps.client_ip); uvicorn
        # would otherwise believe it from 127.0.0.1 and let a client pick its own address.
        proxy_headers=False,
    )
    admin_sock = bind_admin_socket(admin_socket(settings.state_dir))
    admin_config = uvicorn.Config(admin_app, log_level="warning", lifespan="off")
    server = DrainingServer(config, state)
    admin_server = uvicorn.Server(admin_config)
    # Everything loaded so far lives until exit: keep it out of every later collection.
    gc.collect()
    gc.freeze()
    admin_task = asyncio.create_task(admin_server.serve(sockets=[admin_sock]))
    try:
        await server.serve(sockets=sockets)
    finally:
        admin_server.should_exit = True
        await admin_task
        admin_socket(settings.state_dir).unlink(missing_ok=True)
        state.close()
