"""`pcloud-server`: parse arguments, prepare TLS and state, serve HTTPS (and the admin socket).

`pcloud-server --state-dir DIR --listen HOST:PORT [--listen ...] [--network CIDR]
[--store sqlite|etcd --etcd-endpoint URL ... --etcd-ca F --etcd-cert F --etcd-key F]` serves the
coordination API; `pcloud-server admin ...` (see admin.py) manages it from the server's shell.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import socket
import sys
from pathlib import Path

import uvicorn

from . import __version__
from .accounts import Accounts
from .api.install import install_info, install_line
from .app import StoreMismatch, create_app, open_state
from .config import Listen, Settings, parse_network
from .layout import STATE_DIR
from .protocol import DEFAULT_DOMAIN
from .reach.public import public_cert_names
from .security.tls import TlsFiles, ensure_ca, ensure_leaf, fingerprint
from .state import State
from .store.base import StoreError
from .transport.fds import raise_open_files_limit
from .transport.options import add_connection_arguments, connection_settings, transport_limits
from .transport.protocol import guarded_protocol, tls_context

log = logging.getLogger("pcloud.server")

SERVER_JSON = "server.json"


def server_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pcloud-server",
        description="PCloud coordination server (HTTPS). `pcloud-server admin --help` manages it.",
    )
    p.add_argument("--version", action="version", version=f"pcloud-server {__version__}")
    p.add_argument(
        "--state-dir", type=Path, default=STATE_DIR, help=f"server state (default {STATE_DIR})"
    )
    p.add_argument(
        "--listen",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="address to serve HTTPS on (repeatable; default 0.0.0.0:8443)",
    )
    p.add_argument("--network", default=None, help="overlay network CIDR (default 10.0.0.0/24)")
    p.add_argument(
        "--domain",
        default=None,
        help="the network's DNS domain: devices resolve HOSTNAME.DOMAIN "
        "(default pcloud.internal; kept in server.json)",
    )
    p.add_argument("--hostname", default=None, help="name for the certificate (default: hostname)")
    p.add_argument(
        "--advertise-url",
        action="append",
        default=[],
        metavar="URL",
        help="URL clients should use (repeatable; default: the listen addresses)",
    )
    p.add_argument(
        "--public-url",
        default=None,
        metavar="URL",
        help="https://PUBLIC_IP_OR_NAME:PORT that devices outside the LAN use (the home "
        "router forwards this port here); kept in server.json",
    )
    p.add_argument("--offline-grace", type=float, default=10.0, metavar="SECONDS")
    p.add_argument(
        "--ephemeral-timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="remove an ephemeral node after this long offline (default 120)",
    )
    p.add_argument(
        "--token-ttl",
        type=int,
        default=7 * 24 * 3600,
        metavar="SECONDS",
        help="lifetime of a user's login token (default 7 days)",
    )
    p.add_argument(
        "--node-token-ttl",
        type=int,
        default=30 * 24 * 3600,
        metavar="SECONDS",
        help="lifetime of a node token; devices renew it with a key proof (default 30 days)",
    )
    p.add_argument(
        "--max-devices-per-user",
        type=int,
        default=100,
        metavar="N",
        help="devices one non-admin user may own (default 100; admins are exempt)",
    )
    p.add_argument(
        "--server-reserve",
        type=int,
        default=5,
        metavar="N",
        help="addresses only server-role nodes may take (default 5, at most a quarter of the "
        "network)",
    )
    p.add_argument(
        "--login-failures-per-user",
        type=int,
        default=20,
        metavar="N",
        help="failed logins per minute for one username from any address (default 20)",
    )
    p.add_argument(
        "--login-failures-per-source",
        type=int,
        default=30,
        metavar="N",
        help="failed logins per minute from one address for any usernames (default 30)",
    )
    p.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="IP/CIDR",
        help="a reverse proxy whose X-Forwarded-For is believed (repeatable; default none)",
    )
    p.add_argument(
        "--expose-metrics",
        choices=["auto", "yes", "no"],
        default="auto",
        help="serve /metrics (auto: only when listening on loopback alone)",
    )
    p.add_argument(
        "--expose-docs",
        choices=["auto", "yes", "no"],
        default="auto",
        help="serve /docs and /openapi.json (auto: only when listening on loopback alone)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--store",
        choices=["sqlite", "etcd"],
        default=None,
        help="where the state lives: sqlite (this state dir, the default) or etcd (shared by "
        "every coordination server); kept in server.json",
    )
    p.add_argument(
        "--etcd-endpoint",
        action="append",
        default=[],
        metavar="URL",
        help="an etcd client URL, e.g. https://10.0.0.1:2479 (repeatable)",
    )
    p.add_argument("--etcd-ca", type=Path, default=None, help="CA certificate of the etcd members")
    p.add_argument("--etcd-cert", type=Path, default=None, help="client certificate for etcd")
    p.add_argument("--etcd-key", type=Path, default=None, help="client key for etcd")
    add_connection_arguments(p)
    p.add_argument(
        "--packages",
        type=Path,
        default=None,
        metavar="DIR",
        help="the .deb files to serve to new devices with /install.sh (default STATE_DIR/packages)",
    )
    return p


def _path(value: Path | str | None) -> Path | None:
    return Path(value).resolve() if value else None


def _tristate(value: str) -> bool | None:
    return None if value == "auto" else value == "yes"


def under_systemd() -> bool:
    """Whether stdout goes to the journal (systemd sets these for a service's processes)."""
    return bool(os.environ.get("INVOCATION_ID") or os.environ.get("JOURNAL_STREAM"))


def load_settings(args: argparse.Namespace) -> Settings:
    state_dir: Path = args.state_dir
    saved_path = state_dir / SERVER_JSON
    saved = json.loads(saved_path.read_text()) if saved_path.exists() else {}
    network = args.network or saved.get("network") or "10.0.0.0/24"
    parse_network(network)
    if saved.get("network") and args.network and args.network != saved["network"]:
        raise ValueError(
            f"--network {args.network} differs from this state dir's network {saved['network']};"
            " addresses are already handed out in it"
        )
    listen = tuple(
        Listen.parse(x) for x in (args.listen or saved.get("listen") or ["0.0.0.0:8443"])
    )
    settings = Settings(
        state_dir=state_dir,
        listen=listen,
        network=network,
        domain=args.domain or saved.get("domain") or DEFAULT_DOMAIN,
        hostname=args.hostname or saved.get("hostname") or socket.gethostname(),
        advertise_urls=tuple(args.advertise_url or saved.get("advertise_urls", [])),
        public_url=(args.public_url or saved.get("public_url") or "").rstrip("/") or None,
        offline_grace_s=args.offline_grace,
        ephemeral_timeout_s=args.ephemeral_timeout,
        token_ttl_s=args.token_ttl,
        node_token_ttl_s=args.node_token_ttl,
        max_devices_per_user=args.max_devices_per_user,
        server_reserve=args.server_reserve,
        trusted_proxies=tuple(args.trusted_proxy),
        login_failures_per_user=args.login_failures_per_user,
        login_failures_per_source=args.login_failures_per_source,
        expose_metrics=_tristate(args.expose_metrics),
        expose_docs=_tristate(args.expose_docs),
        log_level=args.log_level,
        store=args.store or saved.get("store") or "sqlite",
        etcd_endpoints=tuple(args.etcd_endpoint or saved.get("etcd_endpoints", [])),
        etcd_ca=_path(args.etcd_ca or saved.get("etcd_ca")),
        etcd_cert=_path(args.etcd_cert or saved.get("etcd_cert")),
        etcd_key=_path(args.etcd_key or saved.get("etcd_key")),
        **connection_settings(args),
        packages_dir=_path(args.packages),
    )
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    saved_path.write_text(
        json.dumps(
            {
                "network": network,
                "domain": settings.domain,
                "listen": [f"{x.host}:{x.port}" for x in listen],
                "hostname": settings.hostname,
                "advertise_urls": list(settings.advertise_urls),
                "public_url": settings.public_url,
                "store": settings.store,
                "etcd_endpoints": list(settings.etcd_endpoints),
                "etcd_ca": str(settings.etcd_ca) if settings.etcd_ca else None,
                "etcd_cert": str(settings.etcd_cert) if settings.etcd_cert else None,
                "etcd_key": str(settings.etcd_key) if settings.etcd_key else None,
            },
            indent=2,
        )
    )
    return settings


# Bytes asyncio's TLS transport reads from a socket at a time: a poll or a registration is a
# few hundred bytes, and every connection keeps a buffer this size (see tune_runtime).
SSL_READ_BUFFER = 1024
# Allocations (less deallocations) between two young-generation collections (default 700).
GC_THRESHOLD = 20_000


def tune_runtime() -> None:
    """Process-wide settings for holding ~10,000 idle TLS connections (DESIGN section 7)."""
    # asyncio's SSLProtocol allocates a zeroed read buffer of `max_size` (256 KiB) per
    # connection: 2.5 GB at 10,000 long polls. A private attribute, hence the hasattr guard; one
    # TLS record is at most 16 KiB, so a larger buffer only saves read calls on bulk transfers,
    # which this server does not have.
    import asyncio.sslproto

    if hasattr(asyncio.sslproto.SSLProtocol, "max_size"):
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
        await super().shutdown(sockets=sockets)


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
        print(f"setup code: in {settings.state_dir / 'setup-code'} (0600)", flush=True)
    elif code:
        print(f"setup code: {code}  (also in {settings.state_dir / 'setup-code'})", flush=True)

    app = create_app(settings, state=state)
    admin_app = create_app(settings, state=state, local_admin=True)
    sockets = [bind_tcp(lst) for lst in settings.listen]
    tls = app.state.reach.tls_context = tls_context(files.cert, files.key)  # a re-issue reloads
    await app.state.reach.start_echo()
    config = uvicorn.Config(
        app,
        # TLS, head limits and connection caps live in the protocol (server/transport).
        http=guarded_protocol(tls, transport_limits(settings)),
        ws="none",
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
    admin_sock = bind_admin_socket(settings.state_dir / "admin.sock")
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
        (settings.state_dir / "admin.sock").unlink(missing_ok=True)
        state.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "admin":
        from .admin import main as admin_main

        return admin_main(argv[1:])
    args = server_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings(args)
    except ValueError as exc:
        print(f"pcloud-server: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(settings))
    except (StoreMismatch, StoreError) as exc:
        print(f"pcloud-server: cannot open the store: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"pcloud-server: cannot serve: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
