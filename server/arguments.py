"""`pcloud-server`'s command line and the state dir's `server.json`, turned into `Settings`.

The first start records the network, names and store in `STATE_DIR/server.json`; later starts
(and the admin command, which builds the app in-process when no server runs) read them back, so
a restart needs no arguments and the network can never change under handed-out addresses.
"""

from __future__ import annotations

import argparse
import json
import socket
from pathlib import Path

from . import __version__
from .config import Listen, Settings, parse_network
from .layout import SERVER_JSON, STATE_DIR
from .protocol import DEFAULT_DOMAIN
from .transport.options import add_connection_arguments, connection_settings


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
    p.add_argument(
        "--relay-port",
        type=int,
        default=None,
        metavar="PORT",
        help="UDP port of the relay (default: the HTTPS port's number; 0: WebSocket only)",
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
        relay_port=args.relay_port,
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
