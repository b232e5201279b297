"""The interface as the OS sees it: address, MTU, up/down and routes, through pyroute2.

Both drivers use this for everything that is not WireGuard itself. It acts on the current
network namespace (the backend runs inside the host's). Changes are idempotent and minimal:
the address is replaced, never duplicated; only routes this module added (proto static through
the interface, main table) are ever removed.

pyroute2 0.9 note: the synchronous `IPRoute` runs its own event loop and cannot be used from a
coroutine, so this module uses `AsyncIPRoute` (dumps are async generators there).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from pcloud.backend.wg.driver import DriverError

# WireGuard's own overhead: 20 (IPv4) or 40 (IPv6) outer header + 8 UDP + 32 WireGuard.
# 80 covers the IPv6 case, so one MTU works whichever family carries the tunnel.
WG_OVERHEAD = 80
# A relayed packet also carries the relay's frame header (kind + 32-byte key, protocol.relay).
# Without room for it every full-size relayed packet left as two IP fragments, reassembled at
# each NAT and at the relay and fragmented again (a third of the relay's throughput in
# bench.relay_throughput), and networks that drop fragments would lose them all.
RELAY_OVERHEAD = 1 + 32  # (backend/wg stays apart from the relay: a test ties the two)
MIN_MTU = 1280  # IPv6 minimum; WireGuard interfaces must carry IPv6 inside
FALLBACK_MTU = 1500 - WG_OVERHEAD - RELAY_OVERHEAD  # an Ethernet-sized link is the likely one
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
RTPROT_STATIC = 4
MAIN_TABLE = 254


def compute_mtu(underlying_mtu: int | None) -> int:
    """Tunnel MTU for an underlying link MTU: minus WireGuard's and the relay's overhead, never
    below 1280; FALLBACK_MTU when the underlying MTU is unknown."""
    if underlying_mtu is None or underlying_mtu <= 0:
        return FALLBACK_MTU
    return max(MIN_MTU, underlying_mtu - WG_OVERHEAD - RELAY_OVERHEAD)


def _err(what: str, exc: Exception) -> DriverError:
    return DriverError(f"{what}: {exc}")


def _table(msg: Any) -> int:
    table = msg.get("table")
    return int(table if table is not None else msg["table"])


async def _index(ipr: Any, name: str) -> int | None:
    found = await ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


async def link_index(name: str) -> int | None:
    """ifindex of `name` in this network namespace, None when absent."""
    async with AsyncIPRoute() as ipr:
        return await _index(ipr, name)


async def link_exists(name: str) -> bool:
    return await link_index(name) is not None


async def link_kind(name: str) -> str | None:
    """IFLA_INFO_KIND of the link ('wireguard', 'tun', ...), None when absent or unknown."""
    async with AsyncIPRoute() as ipr:
        idx = await _index(ipr, name)
        if idx is None:
            return None
        for msg in await ipr.link("get", index=idx):
            kind = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
            return str(kind) if kind is not None else None
    return None


async def delete_link(name: str) -> None:
    """Delete `name`; no error when it is already gone."""
    async with AsyncIPRoute() as ipr:
        idx = await _index(ipr, name)
        if idx is None:
            return
        try:
            await ipr.link("del", index=idx)
        except NetlinkError as exc:
            if exc.code != 19:  # ENODEV: gone meanwhile
                raise _err(f"cannot delete {name}", exc) from None


async def create_link(name: str, kind: str) -> None:
    """Create a link of `kind` (the kernel driver's 'wireguard')."""
    async with AsyncIPRoute() as ipr:
        try:
            await ipr.link("add", ifname=name, kind=kind)
        except NetlinkError as exc:
            raise _err(f"cannot create {kind} link {name}", exc) from None


async def default_mtu(exclude: str | None = None) -> int:
    """The MTU the tunnel should have here: the default-route link's MTU minus 113 (the smallest
    when there are several default routes, so no path fragments); without a default route the
    largest MTU among non-loopback links that are up; FALLBACK_MTU otherwise. `exclude` (our own
    interface) is never the underlying link, e.g. when an exit node puts the default route
    through the tunnel."""
    async with AsyncIPRoute() as ipr:
        links = {int(m["index"]): m async for m in await ipr.link("dump")}
        skip = {i for i, m in links.items() if exclude and m.get("ifname") == exclude}
        oifs: set[int] = set()
        async for route in await ipr.get_default_routes():
            oif = route.get("oif")
            if oif is not None and int(oif) not in skip:
                oifs.add(int(oif))
            for hop in route.get("multipath") or ():
                hop_oif = hop.get("oif") if hasattr(hop, "get") else None
                if hop_oif is not None and int(hop_oif) not in skip:
                    oifs.add(int(hop_oif))
        mtus = [int(links[i].get("mtu") or 0) for i in oifs if i in links]
        mtus = [m for m in mtus if m > 0]
        if mtus:
            return compute_mtu(min(mtus))
        up = [
            int(m.get("mtu") or 0)
            for i, m in links.items()
            if i not in skip and m["flags"] & IFF_UP and not m["flags"] & IFF_LOOPBACK
        ]
        up = [m for m in up if m > 0]
        return compute_mtu(max(up)) if up else FALLBACK_MTU


def _family(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> int:
    return socket.AF_INET if net.version == 4 else socket.AF_INET6


async def configure(
    name: str, address: str, *, mtu: int | None = None, routes: tuple[str, ...] = ()
) -> None:
    """Make `name` carry exactly `address` (other global addresses removed), have `mtu` (None:
    `default_mtu()`), be up, and route `routes` through it (stale routes of ours removed)."""
    try:
        iface = ipaddress.ip_interface(address)
        wanted_routes = {ipaddress.ip_network(r, strict=False) for r in routes}
    except ValueError as exc:
        raise DriverError(f"invalid address or route: {exc}") from None
    if mtu is None:
        mtu = await default_mtu(exclude=name)
    async with AsyncIPRoute() as ipr:
        idx = await _index(ipr, name)
        if idx is None:
            raise DriverError(f"interface {name} does not exist")
        try:
            await _ensure_address(ipr, idx, iface)
            for msg in await ipr.link("get", index=idx):
                cur_mtu, flags = int(msg.get("mtu") or 0), int(msg["flags"])
            if cur_mtu != mtu:
                await ipr.link("set", index=idx, mtu=mtu)
            if not flags & IFF_UP:
                await ipr.link("set", index=idx, state="up")
            await _ensure_routes(ipr, idx, wanted_routes)
        except NetlinkError as exc:
            raise _err(f"cannot configure {name}", exc) from None


async def _ensure_address(
    ipr: Any, idx: int, iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface
) -> None:
    have = False
    async for msg in await ipr.addr("dump", index=idx):
        if msg.get("scope", 0) != 0:
            continue  # link-local (the kernel's fe80::) is not ours to manage
        cur = ipaddress.ip_interface(f"{msg.get('address')}/{msg['prefixlen']}")
        if cur == iface:
            have = True
            continue
        await ipr.addr(
            "del",
            index=idx,
            address=str(cur.ip),
            prefixlen=cur.network.prefixlen,
            family=msg["family"],
        )
    if not have:
        # "replace" rather than "add": never EEXIST, never a duplicate.
        await ipr.addr(
            "replace",
            index=idx,
            address=str(iface.ip),
            prefixlen=iface.network.prefixlen,
            family=_family(iface.network),
        )


async def _ensure_routes(
    ipr: Any, idx: int, wanted: set[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> None:
    present: set[ipaddress.IPv4Network | ipaddress.IPv6Network] = set()
    async for msg in await ipr.route("dump", oif=idx):
        if msg.get("proto") != RTPROT_STATIC or _table(msg) != MAIN_TABLE:
            continue
        dst = msg.get("dst") or ("0.0.0.0" if msg["family"] == socket.AF_INET else "::")
        net = ipaddress.ip_network(f"{dst}/{msg['dst_len']}", strict=False)
        if net in wanted:
            present.add(net)
        else:
            await ipr.route("del", dst=str(net), oif=idx, table=MAIN_TABLE, family=msg["family"])
    for net in wanted - present:
        await ipr.route(
            "replace",
            dst=str(net),
            oif=idx,
            table=MAIN_TABLE,
            proto=RTPROT_STATIC,
            family=_family(net),
        )
