"""Endpoints: which of a peer's candidates to use, and which of ours to report.

A peer may list several `ip:port` candidates (its LAN addresses, the address the server saw).
`EndpointSelector` orders them by where they can work from here (`rank`: an address on one of
our own networks first, then public addresses, other private addresses last), starts with the
first and, when no handshake happens within `try_for` seconds, moves on to the next, round and
round until one answers; once a handshake is seen the choice sticks while packets keep arriving
(DESIGN 4). Where WireGuard roamed (the peer's packets come from an address that is not the
candidate, e.g. a NAT's public side) that `learned` endpoint is the choice until its packets stop.
It is pure: time and WireGuard's stats are passed in.

`local_endpoints` lists this host's non-loopback IPv4 addresses with our listen port, which is
what we report to the coordination server.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from pcloud.backend.wg.driver import PeerStats
from pcloud.server.protocol import Peer, check_endpoint, is_lan_address

TRY_FOR_S = 5.0
# A path is alive while packets arrive: the persistent keepalive (every 25 s) at the least.
ALIVE_S = 35.0
SWITCH_S = 1.0


@dataclass
class _Choice:
    candidates: tuple[str, ...]
    index: int
    since: float  # monotonic time the current candidate was set
    confirmed: bool = False
    since_wall: datetime | None = None  # the same moment on the wall clock (handshakes use it)
    # Where WireGuard roamed to: the peer reached us from there with a fresh handshake, so it
    # is a working path even when it is none of the candidates (a NAT's public side).
    learned: str | None = None
    rx: tuple[int, float] | None = None  # WireGuard's received bytes, and when they last grew

    @property
    def current(self) -> str | None:
        return self.learned or (self.candidates[self.index] if self.candidates else None)


class EndpointSelector:
    def __init__(self, try_for: float = TRY_FOR_S) -> None:
        self.try_for = try_for
        self._choices: dict[str, _Choice] = {}

    def chosen(self) -> dict[str, str | None]:
        return {key: c.current for key, c in self._choices.items()}

    def ranked(self, key: str) -> tuple[str, ...]:
        """The peer's candidates, best first (`rank`)."""
        choice = self._choices.get(key)
        return choice.candidates if choice else ()

    def offer(
        self, peers: Sequence[Peer], now: float, local_nets: Sequence[ipaddress.IPv4Network] = ()
    ) -> bool:
        """Take a netmap's candidates without judging the current ones (`update` without
        WireGuard's stats). Judging with no stats took every peer for silent: a netmap that
        came 5 s or more after a candidate was set moved working paths to the next one."""
        return self.update(peers, None, now, None, local_nets)

    def pending(self) -> bool:
        """Some peer with more than one candidate has not shaken hands yet."""
        return any(not c.confirmed and len(c.candidates) > 1 for c in self._choices.values())

    def update(
        self,
        peers: Sequence[Peer],
        stats: Iterable[PeerStats] | None,
        now: float,
        wall_now: datetime | None = None,
        local_nets: Sequence[ipaddress.IPv4Network] = (),
    ) -> bool:
        """Fold in the netmap's peers and WireGuard's stats; True when a chosen endpoint
        changed (the caller then re-applies the config). `local_nets` are this host's networks:
        candidates on them are tried first."""
        by_key = {s.public_key: s for s in stats or ()}
        changed = False
        seen = set()
        for peer in peers:
            key = peer.public_key
            seen.add(key)
            cands = tuple(sorted(peer.endpoints, key=lambda e: rank(e, local_nets)))
            choice = self._choices.get(key)
            if choice is None or choice.candidates != cands:
                # New peer or new candidate list: keep the current endpoint if still offered.
                index = 0
                if choice and choice.candidates and choice.candidates[choice.index] in cands:
                    index = cands.index(choice.candidates[choice.index])
                    if choice.confirmed:
                        choice.candidates, choice.index = cands, index
                        continue
                self._choices[key] = _Choice(cands, index, now, since_wall=wall_now)
                changed = True
                continue
            if stats is None:
                continue  # `offer`: candidates only
            stat = by_key.get(key)
            handshake = stat.last_handshake if stat else None
            alive = _alive(choice, stat, now, wall_now)
            if alive and stat is not None and stat.endpoint and stat.endpoint != choice.current:
                # WireGuard roamed: the peer's authenticated packets come from there.
                choice.learned, choice.confirmed, changed = stat.endpoint, True, True
                continue
            # The switch reaches WireGuard a moment after this decision: a handshake within
            # SWITCH_S of it may still be the previous candidate's.
            after = handshake is not None and (
                choice.since_wall is None
                or (handshake - choice.since_wall).total_seconds() >= SWITCH_S
            )
            if alive and after:
                choice.confirmed = True
                continue
            # A handshake from before this candidate was set says nothing about it, and a
            # path whose packets stopped (a handshake stays "recent" for minutes) is dead.
            choice.confirmed = False
            if choice.learned and not alive:
                choice.learned, choice.since, choice.since_wall = None, now, wall_now
                changed = True
            elif len(cands) > 1 and now - choice.since >= self.try_for:
                choice.index = (choice.index + 1) % len(cands)
                choice.since, choice.since_wall = now, wall_now
                changed = True
        for key in set(self._choices) - seen:
            del self._choices[key]
            changed = True
        return changed


def rank(endpoint: str, local_nets: Sequence[ipaddress.IPv4Network]) -> int:
    """0: on one of our networks (a LAN neighbour); 1: a public address (reachable from
    anywhere, through NATs by hole punching); 2: someone else's private address."""
    try:
        ip = ipaddress.ip_address(endpoint.rpartition(":")[0].strip("[]"))
    except ValueError:
        return 2
    if any(ip in net for net in local_nets):
        return 0
    return 2 if is_lan_address(ip) else 1


def server_rank(url: str, local_nets: Sequence[ipaddress.IPv4Network]) -> int:
    """`rank` for a coordination server's URL; a DNS name counts as public (1): it is how a
    server is named for devices outside its LAN."""
    host = urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return 1
    return rank(f"[{host}]:0", local_nets)


def _alive(choice: _Choice, stat: PeerStats | None, now: float, wall_now: datetime | None) -> bool:
    """Packets from the peer still arrive: a handshake within ALIVE_S, or received bytes that
    grew within ALIVE_S (the peers' persistent keepalives make them grow every 25 s at the
    least). A handshake alone stays "recent" for minutes after its path died."""
    if stat is None or stat.last_handshake is None:
        return False
    if choice.rx is None or stat.rx_bytes != choice.rx[0]:
        # Grown, or seen for the first time (e.g. an interface adopted after a restart): the
        # benefit of the doubt until ALIVE_S without a packet.
        choice.rx = (stat.rx_bytes, now)
        return True
    if now - choice.rx[1] < ALIVE_S:
        return True
    return wall_now is None or (wall_now - stat.last_handshake).total_seconds() < ALIVE_S


def local_endpoints(
    addresses: Iterable[tuple[str, str]], port: int, exclude_iface: str
) -> list[str]:
    """`ip:port` for each (interface, IPv4) pair that is not loopback, link-local or ours."""
    out = []
    for iface, addr in addresses:
        if iface == exclude_iface:
            continue
        ip = ipaddress.ip_address(addr)
        if ip.version != 4:
            continue
        try:
            # The server's rules (no loopback, link-local, reserved...): one refused endpoint
            # would get the whole report refused.
            out.append(check_endpoint(f"{ip}:{port}"))
        except ValueError:
            continue
    return sorted(set(out))


def local_networks(
    interfaces: Iterable[tuple[str, str]], exclude_iface: str
) -> list[ipaddress.IPv4Network]:
    """The IPv4 networks of (interface, address/prefix) pairs, the WireGuard one left out."""
    out = []
    for iface, cidr in interfaces:
        if iface != exclude_iface:
            net = ipaddress.ip_interface(cidr).network
            if isinstance(net, ipaddress.IPv4Network) and not net.is_loopback:
                out.append(net)
    return out


def host_ipv4_addresses() -> list[tuple[str, str]]:
    """(interface name, IPv4 address) of every address in this network namespace."""
    return [(iface, cidr.partition("/")[0]) for iface, cidr in host_ipv4_interfaces()]


def host_ipv4_interfaces() -> list[tuple[str, str]]:
    """(interface name, ADDRESS/PREFIX) of every IPv4 address in this network namespace.

    pyroute2 0.9's synchronous IPRoute drives an event loop of its own, which fails inside a
    running one ("This event loop is already running"): called from a coroutine, the netlink
    dump runs in a short-lived worker thread instead.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _dump_ipv4()
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(_dump_ipv4).result()


def _dump_ipv4() -> list[tuple[str, str]]:
    from pyroute2 import IPRoute  # imported late: netlink only where it is used

    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        return [
            (names.get(a["index"], ""), f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
            for a in ipr.get_addr(family=2)
        ]
