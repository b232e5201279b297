"""The WireGuard engine: the interface (through the driver), the packet filter and the resolver,
brought in line with a netmap.

`apply` vets the netmap, builds the desired config, installs the filter before the peers it
governs (no filter, no peers) and hands the config to the driver, the only caller of
`driver.apply`. Its outcome is facts (`up`, `error`, `skipped`) that `LocalBackend` turns into
the state; it never sets the state itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable

from pcloud.backend import keys
from pcloud.backend.config import BackendSettings
from pcloud.backend.control.pinning import pinned_context
from pcloud.backend.dns.manager import DnsManager
from pcloud.backend.endpoints import EndpointSelector
from pcloud.backend.filter.enforcer import PacketFilter
from pcloud.backend.netmap import NetmapError, desired_config, vet_netmap
from pcloud.backend.persist import NodeInfo
from pcloud.backend.relay.manager import RelayManager
from pcloud.backend.wg.driver import Driver, DriverError, PeerStats
from pcloud.server.protocol import Netmap

log = logging.getLogger(__name__)


class Engine:
    """The interface, its filter and its resolver, and what went wrong with them."""

    def __init__(self, settings: BackendSettings, driver: Driver) -> None:
        self.settings, self.driver = settings, driver
        self.up = False  # the netmap is applied to a live interface
        self.started = False  # driver.start() succeeded and close() is owed
        self.error: str | None = None  # the interface or the netmap cannot be used
        self.skipped: list[str] = []  # netmap peers left out as unsafe (named in status)
        self.selector = EndpointSelector()
        # peers without a direct path go through a server's relay (backend/relay)
        self.relay = RelayManager(ranked=self.selector.ranked)
        # Names for devices; off with the fake driver (no interface, and tests without
        # namespaces must never touch the machine's /etc/resolv.conf).
        self.dns = DnsManager(
            mode="off" if driver.kind == "fake" else settings.dns, state_dir=settings.state_dir,
            interface=settings.interface, listen=settings.dns_listen,
            resolv_conf=settings.resolv_conf,
        )  # fmt: skip
        self.dns_warning: str | None = None
        # The fake driver (unit tests) has no interface: its filter is built but never
        # installed, so no test puts a table into the namespace it runs in.
        self.filter = PacketFilter(settings.interface, install=driver.kind != "fake")

    def filter_error(self) -> str | None:
        if not self.filter.failed:
            return None
        return f"packet filter not installed ({self.filter.reason}); tunnels withheld until it is"

    def skipped_text(self) -> str | None:
        if not self.skipped:
            return None
        return f"ignored {len(self.skipped)} unsafe netmap peer(s): " + "; ".join(self.skipped)

    async def start(self) -> bool:
        """Interface up (adopting an existing one); False, with `error` set, if it cannot be."""
        try:
            await self.driver.start()
        except DriverError as e:
            self.error = f"WireGuard: {e}"
            log.error("cannot start the WireGuard interface: %s", e)
            return False
        self.started, self.error = True, None
        return True

    async def stop(self) -> None:
        """Tunnels down: resolver, interface and filter removed."""
        await self.dns.stop()
        self.dns_warning = None
        if self.started:
            with contextlib.suppress(DriverError):
                await self.driver.close(remove_interface=True)
        await self.filter.remove()
        self.started, self.up, self.error = False, False, None

    async def release(self) -> None:
        """Backend exit: the interface and its tunnels stay; nobody answers names any more."""
        await self.dns.stop()
        if self.started:
            with contextlib.suppress(DriverError):
                await self.driver.close(remove_interface=False)

    async def stats(self) -> list[PeerStats]:
        """Live peer counters (none while down or when the driver cannot tell)."""
        if not self.up:
            return []
        with contextlib.suppress(DriverError):
            return await self.driver.stats()
        return []

    async def run_relay(
        self,
        key: keys.PrivateKey,
        token: str,
        ca_pem: str,
        netmap: Callable[[], Netmap | None],
        on_change: Callable[[], Awaitable[None]],
    ) -> None:
        """Carry the peers that have no direct path through a server's relay until cancelled."""
        if self.driver.kind == "fake":
            return  # no interface, no packets to relay
        await self.relay.run(
            key=key,
            token=token,
            ctx=pinned_context(ca_pem),
            netmap=lambda: netmap() if self.up else None,
            wg_port=self.driver.listen_port,
            stats=self.driver.stats,
            on_change=on_change,
        )

    def shown(self, netmap: Netmap | None, node: NodeInfo | None) -> Netmap | None:
        """The netmap as status shows it: without the peers left out (named in the error)."""
        if netmap is not None and node is not None and self.skipped:
            with contextlib.suppress(NetmapError):
                return vet_netmap(netmap, node.network)[0]
        return netmap

    async def apply(self, netmap: Netmap, node: NodeInfo, private_key: str) -> None:
        """Bring interface, filter and resolver in line with `netmap`."""
        try:
            # The netmap is other nodes' data relayed by the server: a peer with an unsafe
            # field is left out (and named), the others are still configured.
            vetted, skipped = vet_netmap(netmap, node.network)
            config = desired_config(
                vetted, private_key=private_key, network=node.network,
                listen_port=self.settings.listen_port, endpoints=self.relay.endpoints(self.selector.chosen()),
                tries=self.relay.paths.tries,
            )  # fmt: skip
        except (NetmapError, ValueError) as e:
            self.up = False
            self.error = f"netmap: {e}"
            log.error("the netmap cannot be applied: %s", e)
            return
        if skipped != self.skipped:
            for line in skipped:
                log.warning("netmap: ignoring %s", line)
            self.skipped = skipped
        # The filter goes in before the peers it governs; without it, no peer at all.
        if not await self.filter.apply(netmap.filter):
            config = dataclasses.replace(config, peers=())
        try:
            await self.driver.apply(config)
        except DriverError as e:
            self.up = False
            self.error = f"WireGuard: {e}"
            log.error("applying the netmap failed: %s", e)
        else:
            self.up, self.error = True, None
            self.relay.wake()  # new peers or candidates: the relay decides now
            # After the interface has its address: in resolved mode we listen on it.
            self.dns_warning = await self.dns.ensure(netmap)
