"""The connection limits' command-line flags and their Settings fields."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import Settings
from .protocol import TransportLimits


def add_connection_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection limits")
    g.add_argument(
        "--head-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="close a connection that has not finished its TLS handshake and request head "
        "within this long (default 10)",
    )
    g.add_argument(
        "--max-connections-per-source",
        type=int,
        default=1000,
        metavar="N",
        help="open connections one IPv4 address or IPv6 /64 may hold (default 1000; 0: no cap; "
        "every device holds one, so allow for NATs)",
    )
    g.add_argument(
        "--max-polls-per-node",
        type=int,
        default=2,
        metavar="N",
        help="long polls (and, apart, netmap streams) one node may hold at once; a further "
        "one answers the oldest 'unchanged' or ends the oldest stream (default 2)",
    )
    g.add_argument(
        "--stream-keepalive",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="write a keep-alive line on a quiet netmap stream after this long (default 20)",
    )


def connection_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The Settings fields of the flags above, checked."""
    if not 0 < args.head_timeout <= 3600:
        raise ValueError("--head-timeout must be above 0 and at most 3600 seconds")
    if args.max_connections_per_source < 0:
        raise ValueError("--max-connections-per-source must be 0 (no cap) or more")
    if args.max_polls_per_node < 1:
        raise ValueError("--max-polls-per-node must be at least 1")
    if not 0.05 <= args.stream_keepalive <= 300:
        raise ValueError("--stream-keepalive must be between 0.05 and 300 seconds")
    return {
        "head_timeout_s": args.head_timeout,
        "max_connections_per_source": args.max_connections_per_source,
        "max_polls_per_node": args.max_polls_per_node,
        "stream_keepalive_s": args.stream_keepalive,
    }


def transport_limits(settings: Settings) -> TransportLimits:
    return TransportLimits(
        head_timeout_s=settings.head_timeout_s,
        max_connections_per_source=settings.max_connections_per_source,
    )
