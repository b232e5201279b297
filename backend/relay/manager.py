"""The backend's relay client (DESIGN section 9): links to every coordination server's relay,
one local proxy socket per relayed peer, and the choice of who is relayed.

Every server in the netmap runs a relay. We register with each one we reach (UDP first; a
WebSocket on its HTTPS port when UDP gets no answer), so a peer can reach us through whichever
relay it uses and a dead relay costs nothing but a switch to the next one: frames go out through
the first server (netmap order) whose relay is up. A home cluster has one to three servers, so
registering with all of them is cheaper than agreeing on a "home relay" through the netmap.

Who is relayed is `paths.RelayPaths`' call: the relay first, direct as soon as it works. For
that the relay must be up early: a netmap applied or a link coming up makes the loop decide at
once instead of at its next tick, and where UDP does not get out (the NAT probe got no echo
answer) the WebSocket opens without waiting for a UDP welcome.

A peer's packets go back through the relay they last came from (while it is up): when one side
leaves a dead relay, the other follows at its next packet instead of finding out by itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx

from pcloud.backend.keys import PrivateKey
from pcloud.backend.relay.link import Link, StreamLink, UdpLink
from pcloud.backend.relay.paths import RelayPaths
from pcloud.backend.relay.proxy import PeerProxy, open_proxy
from pcloud.backend.wg.driver import PeerStats
from pcloud.server.protocol import Netmap, RelayInfo
from pcloud.server.protocol import relay as wire
from pcloud.shared.tasks import cancel_and_wait

log = logging.getLogger(__name__)
TICK_S = 1.0
# No UDP welcome this long after the first hello: open the WebSocket too. A welcome takes one
# round trip and the link sends its hello twice meanwhile (link.ANSWER_S); any longer only
# delays a host whose network drops UDP, for which the relay is the only path.
UDP_GRACE_S = 1.5
FOLLOW_WAKE_S = 0.25  # packets of a peer we do not relay wake the loop at most this often
KIND_POLL_S = 0.25  # how often that wait looks at the NAT kind (the monitor has no event)
INFO_RETRY_S = 5.0


class RelayManager:
    def __init__(self, ranked: Callable[[str], Sequence[str]] = lambda key: ()) -> None:
        self.paths = RelayPaths()
        # Whether this host's NAT probe got no echo answer at all (backend/nat; Reach sets it):
        # UDP most likely does not get out.
        self.no_echo: Callable[[], bool] = lambda: False
        # A peer's candidates best first (the endpoint selector's): a relayed peer's probes.
        self.ranked = ranked
        self._wake = asyncio.Event()  # decide now, not at the next tick
        self._woken = 0.0  # when a relayed packet last woke the loop
        self.proxies: dict[str, PeerProxy] = {}
        self._links: dict[str, list[Link]] = {}  # server URL -> its links (UDP, WebSocket)
        self._access: dict[str, asyncio.Task[None]] = {}
        self._wg_port = 0
        self._peers: set[str] = set()
        self._raw: dict[bytes, str] = {}  # a peer's raw key -> base64 (no encoding per packet)
        self._via: dict[bytes, Link] = {}  # a peer's raw key -> the link it last came through

    # -- what the rest of the backend asks ----------------------------------------------

    def endpoints(self, chosen: Mapping[str, str | None]) -> dict[str, str | None]:
        """The WireGuard endpoint per peer: the proxy for relayed peers, else `chosen`."""
        out = dict(chosen)
        out.update(self.paths.trying)
        out.update(self.paths.roamed)
        for key in self.paths.relayed:
            proxy = self.proxies.get(key)
            if proxy is not None:
                out[key] = proxy.endpoint
        return out

    def direct_stats(self, stats: list[PeerStats]) -> list[PeerStats]:
        """`stats` without the peers WireGuard reaches through a proxy: the endpoint selector
        must never take a proxy for a direct candidate that answered."""
        proxies = {p.endpoint for p in self.proxies.values()}
        return [s for s in stats if s.endpoint not in proxies]

    def wake(self) -> None:
        """Something the choice depends on changed (a netmap applied, a link up)."""
        self._wake.set()

    def udp_blocked(self) -> bool:
        """UDP does not get out from here: no relay welcomed us over UDP, and either one did
        over its WebSocket or no address echo answered the NAT probe."""
        up = {link.transport for links in self._links.values() for link in links if link.up}
        return "udp" not in up and ("tcp" in up or self.no_echo())

    def labels(self) -> dict[str, str]:
        """Proxy endpoint -> the path status shows (`relay rpi111`, `relay rpi111 (tcp)`)."""
        out = {}
        for proxy in self.proxies.values():
            link = self._link_for(proxy.key)
            label = "relay (none up)"
            if link is not None:
                label = f"relay {link.name}" + (" (tcp)" if link.transport == "tcp" else "")
            out[proxy.endpoint] = label
        return out

    # -- the loop -------------------------------------------------------------------------

    async def run(
        self,
        *,
        key: PrivateKey,
        token: str,
        ctx: ssl.SSLContext,
        netmap: Callable[[], Netmap | None],
        wg_port: Callable[[], Awaitable[int | None]],
        stats: Callable[[], Awaitable[list[PeerStats]]],
        on_change: Callable[[], Awaitable[None]],
    ) -> None:
        self.paths.me = key.public_key()
        try:
            while True:
                self._wake.clear()
                nm = netmap()
                port = await wg_port()
                if nm is not None and port:
                    self._wg_port = port
                    peers = {p.public_key for p in nm.peers}
                    if peers != self._peers:
                        self._peers = peers
                        self._raw = {base64.b64decode(k): k for k in peers}
                        self._via = {k: v for k, v in self._via.items() if k in self._raw}
                    self._ensure_links(nm.servers, key, token, ctx)
                    if await self._decide(nm, await stats()):
                        await on_change()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(TICK_S):  # a period, cut short by wake()
                        await self._wake.wait()
        finally:
            await self.close()

    async def close(self) -> None:
        await cancel_and_wait(*self._access.values())
        self._access.clear()
        self._links.clear()
        self._via.clear()
        for proxy in self.proxies.values():
            proxy.close()
        self.proxies.clear()
        self.paths = RelayPaths()

    async def _decide(self, nm: Netmap, stats: list[PeerStats]) -> bool:
        for key in self.paths.relayed - set(self.proxies):
            await self._proxy(key)
        up = self._link() is not None
        before = set(self.paths.relayed)
        changed = self.paths.update(
            nm.peers, stats, {k: p.endpoint for k, p in self.proxies.items()},
            time.monotonic(), datetime.now(UTC), up, self.udp_blocked(), self.ranked,
        )  # fmt: skip
        for key in self.paths.relayed - set(self.proxies):
            await self._proxy(key)
        if self.paths.relayed != before:
            names = {p.public_key: p.hostname for p in nm.peers}
            log.info(
                "relayed peers: %s",
                ", ".join(sorted(names.get(k, k) for k in self.paths.relayed)) or "(none)",
            )
        for key in set(self.proxies) - self._peers:
            self.proxies.pop(key).close()
        return changed

    async def _proxy(self, key: str) -> PeerProxy:
        proxy = self.proxies.get(key)
        if proxy is None:
            proxy = await open_proxy(base64.b64decode(key), self._wg_port, self._send)
            self.proxies[key] = proxy
        return proxy

    # -- frames ---------------------------------------------------------------------------

    def _link(self) -> Link | None:
        for links in self._links.values():
            for link in links:
                if link.up:
                    return link
        return None

    def _link_for(self, peer: bytes) -> Link | None:
        """The relay the peer's packets last came through while it is up, else the first up."""
        link = self._via.get(peer)
        return link if link is not None and link.up else self._link()

    def _send(self, dst: bytes, frames: memoryview, size: int) -> None:
        link = self._link_for(dst)
        if link is not None:
            link.send_frames(frames, size)

    def _recv(self, via: Link, src: bytes, packets: memoryview, size: int) -> None:
        """A run of packets from `src` (each `size` bytes, the last may be shorter), a view of
        the link's buffer valid during the call."""
        key = self._raw.get(src)
        if key is None:
            return  # not a peer of ours (the relay should never send it): dropped
        if self._via.get(src) is not via:
            self._via[src] = via
        if key not in self.paths.relayed and time.monotonic() - self._woken > FOLLOW_WAKE_S:
            # The peer switched to the relay before we did: follow now, before a rotation of
            # our direct candidates sets WireGuard's endpoint away from the proxy it roamed to.
            self._woken = time.monotonic()
            self.wake()
        proxy = self.proxies.get(key)
        if proxy is not None:
            proxy.deliver(packets, size)
        else:
            # The peer relays to us before we decided to: a proxy, then WireGuard roams to it.
            # (a copy: the view's buffer is reused by the next run)
            asyncio.get_running_loop().create_task(self._first(key, bytes(packets), size))

    async def _first(self, key: str, packets: bytes, size: int) -> None:
        (await self._proxy(key)).deliver(memoryview(packets), size)

    # -- links ----------------------------------------------------------------------------

    def _ensure_links(
        self, servers: list[str], key: PrivateKey, token: str, ctx: ssl.SSLContext
    ) -> None:
        for url in servers:
            if url not in self._access:
                self._links[url] = []
                self._access[url] = asyncio.create_task(self._reach(url, key, token, ctx))
        for url in set(self._access) - set(servers):
            self._access.pop(url).cancel()
            self._links.pop(url, None)
            live = {id(link) for links in self._links.values() for link in links}
            self._via = {k: v for k, v in self._via.items() if id(v) in live}

    async def _reach(self, url: str, key: PrivateKey, token: str, ctx: ssl.SSLContext) -> None:
        """Register with the relay of the server at `url` and keep registered."""
        info = await self._info(url, token, ctx)
        host = urlsplit(url).hostname or ""
        tasks = []
        try:
            if info.udp_port:
                udp = UdpLink(info, host, key, self._recv)
                udp.on_up = self.wake
                self._links[url].append(udp)
                tasks.append(asyncio.create_task(udp.run()))
                await self._grace(udp)
                if udp.up:
                    log.info("relay %s reached over UDP at %s:%d", info.name, host, info.udp_port)
            if not tasks or not self._links[url][0].up:
                ws_url = url.replace("https://", "wss://", 1).rstrip("/") + wire.RELAY_PATH
                stream = StreamLink(info.name, ws_url, token, ctx, self._recv)
                stream.on_up = self.wake
                self._links[url].append(stream)
                tasks.append(asyncio.create_task(stream.run()))
                log.info("relay %s: WebSocket at %s", info.name, ws_url)
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def _grace(self, udp: UdpLink) -> None:
        """Until `udp` is welcomed, UDP_GRACE_S passed, or the NAT probe found no echo answer
        (UDP blocked: the WebSocket at once)."""
        deadline = time.monotonic() + UDP_GRACE_S
        while not udp.welcomed.is_set() and not self.no_echo():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, KIND_POLL_S)):
                    await udp.welcomed.wait()

    async def _info(self, url: str, token: str, ctx: ssl.SSLContext) -> RelayInfo:
        async with httpx.AsyncClient(verify=ctx, timeout=5.0) as client:
            while True:
                try:
                    r = await client.get(
                        url.rstrip("/") + wire.RELAY_PATH,
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    if r.status_code == 200:
                        return RelayInfo.model_validate_json(r.content)
                    log.debug("relay info from %s: HTTP %d", url, r.status_code)
                except (httpx.HTTPError, ValueError) as e:
                    log.debug("relay info from %s: %s", url, e)
                await asyncio.sleep(INFO_RETRY_S)  # backoff: the server may come back
