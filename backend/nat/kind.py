"""Tell the NAT's kind from what the echoes saw (pure).

- `none (public)`: a public observer saw one of our own addresses with our own port;
- `endpoint-independent`: two or more public destinations saw the same public ip:port (Linux
  masquerade, most home routers): crossing handshakes open it;
- `endpoint-dependent (symmetric)`: different destinations saw different ports or addresses: a
  peer cannot learn the port it must send to, so only a relay (or a forward) reaches us;
- otherwise `unknown (...)` with the reason.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping

from pcloud.server.protocol import is_lan_address

NONE = "none (public)"
INDEPENDENT = "endpoint-independent"
DEPENDENT = "endpoint-dependent (symmetric)"
# No echo answered at all: this host's UDP does not get out (an office that drops it), or
# every server is down; the relay (backend/relay) then goes over TCP without waiting for UDP.
NO_ECHO = "unknown (no address echo answered)"


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def classify(
    seen: Mapping[tuple[str, int], str], local_ips: Collection[str], local_port: int
) -> str:
    """`seen`: echo (ip, port) -> the "ip:port" it saw us at; `local_ips`: this host's IPv4
    addresses; `local_port`: the probing socket's port."""
    if not seen:
        return NO_ECHO
    public = {}
    for (target, _port), where in seen.items():
        ip = _ip(target)
        if ip is not None and not is_lan_address(ip) and not ip.is_loopback:
            public[(target, _port)] = where
    if not public:
        return "unknown (only servers on this LAN answered)"
    answers = set(public.values())
    if len(answers) > 1:
        return DEPENDENT
    host, _, port = next(iter(answers)).rpartition(":")
    if host.strip("[]") in set(local_ips) and port == str(local_port):
        return NONE
    if len(public) < 2:
        return "behind NAT (kind unknown: one observer)"
    return INDEPENDENT
