"""`--advertise-endpoint HOST:PORT` where HOST may be a DNS name (a home whose public address
changes, with a dynamic-DNS name): checked at start, resolved again at every endpoint report, so
the reported candidate follows the address."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket

from pcloud.server.protocol import DOMAIN_RE, PORT_RE, check_endpoint

log = logging.getLogger(__name__)


def check_advertised(value: str) -> str:
    """`IP:PORT` (canonical, as the server wants it) or `NAME:PORT`; ValueError says why."""
    try:
        return check_endpoint(value)
    except ValueError as exc:
        host, sep, port = value.rpartition(":")
        if not sep or not host or _is_ip(host.strip("[]")):
            raise exc from None
        if not PORT_RE.fullmatch(port) or int(port) > 65535:
            raise ValueError(f"endpoint {value!r} has no valid port (1-65535)") from None
        name = host.lower().rstrip(".")
        if not DOMAIN_RE.fullmatch(name) or name.replace(".", "").isdigit():
            raise ValueError(
                f"endpoint {value!r}: {host!r} is neither an IP nor a DNS name"
            ) from None
        return f"{name}:{port}"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


async def resolve_advertised(value: str) -> str | None:
    """The `IP:PORT` to report for a checked `value`: itself when numeric, else the name's
    current IPv4 address (None while it does not resolve: the report goes without it)."""
    host, _, port = value.rpartition(":")
    if _is_ip(host.strip("[]")):
        return value
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, family=socket.AF_INET, type=socket.SOCK_DGRAM)
    except OSError as exc:
        log.warning("cannot resolve the advertised endpoint's name %s: %s", host, exc)
        return None
    addresses = sorted({str(info[4][0]) for info in infos})
    for address in addresses:
        try:
            return check_endpoint(f"{address}:{port}")
        except ValueError:
            continue  # e.g. a loopback answer: never advertised
    return None
