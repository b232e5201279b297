"""LocalBackend: the backend core. Owns the facts, turns netmaps into WireGuard config, answers
the local API.

It is the only caller of `driver.apply`. The state is never set by hand: every change of a fact
ends in `_recompute()`, which asks `state.next_state` and logs real transitions. Operations
(login, up, down, logout) are serialised by one lock; the poller and the housekeeping loop run
as tasks that `_stop_tasks` cancels.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from pcloud.backend import keys
from pcloud.backend.config import BackendSettings
from pcloud.backend.control.client import (
    ControlClient,
    ControlError,
    ControlUnreachable,
    EventHooks,
)
from pcloud.backend.control.liveness import Liveness
from pcloud.backend.control.pinning import (
    PinningError,
    base_url,
    ca_fingerprint,
    fetch_pinned_ca,
    parse_join_link,
    pinned_context,
)
from pcloud.backend.control.poller import Poller, ServerList
from pcloud.backend.dns.manager import DnsManager
from pcloud.backend.endpoints import (
    EndpointSelector,
    host_ipv4_interfaces,
    local_endpoints,
    local_networks,
)
from pcloud.backend.errors import LoginFailed, NotLoggedIn
from pcloud.backend.events import Event, EventBus
from pcloud.backend.filter.enforcer import PacketFilter
from pcloud.backend.headless import headless_login
from pcloud.backend.jobs import ha_enable
from pcloud.backend.jobs.install_server import resume_services
from pcloud.backend.jobs.runner import JobRunner
from pcloud.backend.localapi.schemas import LoginRequest, Status
from pcloud.backend.nat.advertise import resolve_advertised
from pcloud.backend.nat.monitor import NatMonitor
from pcloud.backend.netmap import (
    NetmapError,
    apply_netmap,
    desired_config,
    servers_changed,
    vet_netmap,
)
from pcloud.backend.persist import NodeInfo, Store, atomic_write
from pcloud.backend.server_supervisor import Services
from pcloud.backend.state import Facts, State, StateTracker
from pcloud.backend.status import build_status
from pcloud.backend.wg.driver import Driver, DriverError
from pcloud.server.protocol import Netmap, ProofPurpose, RegisterAnswer, RegisterRequest

log = logging.getLogger(__name__)


def _renew_at(ttl_s: int | None) -> float | None:
    """When to renew a node token that lives `ttl_s` (half-way); None if it never expires."""
    return time.time() + ttl_s / 2 if ttl_s else None


class LocalBackend:
    def __init__(
        self,
        settings: BackendSettings,
        driver: Driver,
        *,
        bus: EventBus | None = None,
        control_hooks: EventHooks | None = None,
    ) -> None:
        self.settings, self.driver = settings, driver
        self.bus = bus or EventBus()
        self.store = Store(settings.state_dir)
        self._hooks = control_hooks  # tests capture what goes to the server through these
        self._lock = asyncio.Lock()
        self._key = keys.PrivateKey.generate()  # replaced by the persisted key in start()
        self.node: NodeInfo | None = None
        self.netmap: Netmap | None = None
        self.want_running = False
        self.driver_up = False  # the netmap is applied to a live interface
        self._driver_started = False  # driver.start() succeeded and close() is owed
        self._driver_error: str | None = None
        self._fatal: str | None = None  # e.g. a headless login that cannot succeed
        self.warning: str | None = None  # shown in status.error without leaving Running
        self._skipped: list[str] = []  # netmap peers left out as unsafe (named in status)
        # When the coordination server stopped answering (None while it answers).
        self.unreachable_since: datetime | None = None
        self.tracker = StateTracker()
        self.selector = EndpointSelector()
        # The NAT's kind (in status); also says at once when this host moved to another network.
        self.nat = NatMonitor(
            self._server_urls, self._recompute, on_moved=self._moved, interface=settings.interface
        )
        self._local_nets: list[ipaddress.IPv4Network] = []  # tried first among candidates
        # Names for devices; off with the fake driver (no interface, and tests without
        # namespaces must never touch the machine's /etc/resolv.conf).
        self.dns = DnsManager(
            mode="off" if driver.kind == "fake" else settings.dns, state_dir=settings.state_dir,
            interface=settings.interface, listen=settings.dns_listen,
            resolv_conf=settings.resolv_conf,
        )  # fmt: skip
        self._dns_warning: str | None = None
        # The fake driver (unit tests) has no interface: its filter is built but never
        # installed, so no test puts a table into the namespace it runs in.
        self.filter = PacketFilter(settings.interface, install=driver.kind != "fake")
        self._control: ControlClient | None = None
        self._servers: ServerList | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._reported: list[str] | None = None
        self._forget_task: asyncio.Task[None] | None = None
        # Long jobs (install-server, join-server) and the server daemons they leave running.
        self.k3s: Any = None  # the one K3sDriver, made by the jobs when this is a server
        self.jobs = JobRunner(settings.state_dir, on_event=self._job_event)
        self.services = Services(
            settings.state_dir, system_root=settings.system_root,
            manager=settings.service_manager,  # type: ignore[arg-type]
        )

    @property
    def public_key(self) -> str:
        return self._key.public_key()

    def _job_event(self, job: dict[str, object]) -> None:
        self.bus.publish(Event("job", dict(job)))

    # -- facts and state -------------------------------------------------------------------

    @property
    def state(self) -> State:
        assert self.tracker.state is not None
        return self.tracker.state

    def _facts(self) -> Facts:
        return Facts(
            logged_in=self.node is not None,
            want_running=self.want_running,
            have_netmap=self.netmap is not None,
            driver_up=self.driver_up,
            fatal_error=self._driver_error or self._fatal or self._filter_error(),
        )

    def _filter_error(self) -> str | None:
        if not self.filter.failed:
            return None
        return f"packet filter not installed ({self.filter.reason}); tunnels withheld until it is"

    def set_fatal(self, reason: str) -> None:
        """A problem only a person can fix (shown as the Error state)."""
        log.error("%s", reason)
        self._fatal = reason
        self._recompute()

    def set_warning(self, text: str | None) -> None:
        """A problem shown in status.error without changing the state (e.g. a failing login)."""
        self._on_reachable(text)

    def _recompute(self) -> None:
        self.tracker.update(self._facts())
        # A status event is a nudge: listeners fetch a fresh snapshot (with live counters).
        self.bus.publish(Event("status", {}))

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load what we persisted and reconcile: no login and no tunnel teardown needed, even
        when the coordination server is down."""
        self.store.ensure_dir()
        self.dns.recover()  # a killed backend's resolv.conf comes back first
        self._key = keys.load_or_create_private_key(self.store.key_path)
        self.node = self.store.load_node()
        self.netmap = self.store.load_netmap() if self.node else None
        self.want_running = self.store.load_prefs().want_running
        ca = self.store.load_ca()
        if ca:
            self._control = ControlClient(pinned_context(ca), event_hooks=self._hooks)
        log.info("backend starting: public key %s, node %s", self._key.public_key(), self.node)
        self._recompute()
        if self.node and self.want_running:
            async with self._lock:
                await self._go_up()
        elif self.node is None and self.settings.headless:
            self._spawn(headless_login(self))
        # After the interface is up: K3s and our etcd member bind to our overlay address, and
        # the etcd member before the coordination server that uses it.
        await ha_enable.resume(self)
        await resume_services(self)

    async def shutdown(self) -> None:
        """Backend exit: stop our loops, leave the interface and its tunnels as they are."""
        async with self._lock:
            await self._stop_tasks()
            # The tunnels stay, but nobody answers on our resolver address once we exit.
            await self.dns.stop()
            if self._driver_started:
                with contextlib.suppress(DriverError):
                    await self.driver.close(remove_interface=False)
            if self._control:
                await self._control.aclose()

    # -- operations (local API) ------------------------------------------------------------

    async def login(self, req: LoginRequest) -> None:
        async with self._lock:
            try:
                link = parse_join_link(req.server_url)
                ca = self.store.load_ca()
                if not ca or ca_fingerprint(ca) != link.fingerprint:
                    ca = await fetch_pinned_ca(link)
            except PinningError as e:
                raise LoginFailed(str(e), code="pinning_failed") from None
            control = ControlClient(pinned_context(ca), event_hooks=self._hooks)
            try:
                bearer = req.auth_key
                if bearer is None:
                    assert req.username and req.password
                    bearer = (await control.login(link.base_url, req.username, req.password)).token
                answer = await control.register(
                    link.base_url,
                    bearer,
                    RegisterRequest(
                        public_key=self._key.public_key(),
                        hostname=self.settings.hostname,
                        endpoints=[],  # reported as soon as the interface has its port
                        # Every login proves our key: the server needs it for a server-role
                        # node, and a proven token is what server secrets are handed to.
                        proof=await control.proof(link.base_url, self._key, "register"),
                    ),
                )
            except ControlError as e:
                await control.aclose()
                message = self._login_refused(e)
                raise LoginFailed(message, code=e.code, http_status=e.status) from None
            except ControlUnreachable as e:
                await control.aclose()
                raise LoginFailed(str(e), code="server_unreachable", http_status=502) from None
            await self._logged_in(control, req.server_url, ca, answer)

    def _login_refused(self, err: ControlError) -> str:
        """The server's refusal, in terms of this device: a key registered to another owner
        means another account is logged in here (the same account may log in again)."""
        if err.code != "public_key_taken":
            return err.message
        if self.node is not None:
            user = self.netmap.self.user if self.netmap else "another user"
            return (
                f"this device is logged in as {user} on {base_url(self.node.server_url)}; "
                "run `pcloud logout` first to log in as someone else"
            )
        return (
            "this device's key belongs to another account's device on that server: an admin "
            f"removes it with `pcloud-server admin nodes delete {self.settings.hostname}`"
        )

    async def adopt_registration(self, server_url: str, ca: str, answer: RegisterAnswer) -> None:
        """Use a registration made elsewhere (install-server registers through the server's
        admin socket) exactly as if `login` had made it."""
        async with self._lock:
            control = ControlClient(pinned_context(ca), event_hooks=self._hooks)
            await self._logged_in(control, server_url, ca, answer)

    async def _logged_in(
        self, control: ControlClient, server_url: str, ca: str, answer: RegisterAnswer
    ) -> None:
        await self._stop_tasks()
        if self._control:
            await self._control.aclose()
        self._control = control
        self.store.save_ca(ca)
        self.node = NodeInfo(
            node_id=answer.node_id, node_token=answer.node_token, server_url=server_url,
            address=answer.address, network=answer.network, hostname=self.settings.hostname,
            renew_at=_renew_at(answer.node_token_ttl_s),
        )
        self.store.save_node(self.node)
        self.netmap = apply_netmap(None, answer.netmap)
        self.store.save_netmap(self.netmap)
        self._set_want_running(True)
        self._fatal = None
        self.warning, self.unreachable_since = None, None
        log.info("logged in as node %d, address %s", answer.node_id, answer.address)
        await self._go_up()

    async def up(self) -> None:
        async with self._lock:
            if self.node is None:
                raise NotLoggedIn()
            self._set_want_running(True)
            if not self._tasks:
                await self._go_up()
            else:
                self._recompute()

    async def down(self) -> None:
        async with self._lock:
            if self.node is None:
                raise NotLoggedIn()
            self._set_want_running(False)
            await self._go_down()

    async def logout(self) -> None:
        async with self._lock:
            await self._go_down()
            if self.node and self._control:
                try:
                    await self._control.delete_self(
                        base_url(self.node.server_url), self.node.node_token
                    )
                except (ControlError, ControlUnreachable) as e:
                    # The credentials are forgotten anyway; an admin can remove the node.
                    log.warning("could not tell the server about the logout: %s", e)
            self.store.forget_node()
            self.node, self.netmap, self.warning, self._fatal = None, None, None, None
            self.unreachable_since = None
            self._recompute()

    async def rotate_key(self) -> None:
        """New WireGuard key pair, same node id and address."""
        async with self._lock:
            if self.node is None or self._control is None:
                raise NotLoggedIn()
            new = keys.PrivateKey.generate()
            try:
                await self._control.rotate_key(self._current_server(), self.node.node_token, new)
            except (ControlError, ControlUnreachable) as e:
                raise LoginFailed(f"key rotation failed: {e}", code="rotate_failed") from None
            atomic_write(self.store.key_path, (new.b64() + "\n").encode())
            self._key = new
            if self.netmap is not None:
                self_peer = self.netmap.self.model_copy(update={"public_key": new.public_key()})
                self.netmap = self.netmap.model_copy(update={"self": self_peer})
            if self.driver_up:
                await self._apply()
            log.info("rotated key: public key now %s", new.public_key())

    async def key_proof(self, server: str, purpose: ProofPurpose) -> str:
        """A proof of our WireGuard key for `server` (jobs: promote to server)."""
        if self._control is None:
            raise NotLoggedIn()
        return await self._control.proof(server, self._key, purpose)

    async def renew_token(self) -> bool:
        """Extend our node token with a key proof (before it expires, or once it has); False
        when the server would not (the node is gone) or cannot be reached now."""
        if self.node is None or self._control is None:
            return False
        try:
            answer = await self._control.renew(
                self._current_server(), self.node.node_token, self._key
            )
        except (ControlError, ControlUnreachable) as e:
            log.warning("renewing the node token failed (retrying in a minute): %s", e)
            self.node.renew_at = time.time() + 60
            return False
        self.node.renew_at = _renew_at(answer.ttl_s)
        self.store.save_node(self.node)
        log.info("node token renewed until %s", answer.expires_at.isoformat())
        return True

    # -- status ----------------------------------------------------------------------------

    async def status(self) -> Status:
        stats = []
        if self.driver_up:
            with contextlib.suppress(DriverError):
                stats = await self.driver.stats()
        shown = self.netmap
        if shown is not None and self.node is not None and self._skipped:
            with contextlib.suppress(NetmapError):
                shown = vet_netmap(shown, self.node.network)[0]  # the skipped are named in error
        return build_status(
            self.state, shown, stats,
            server_url=self.node.server_url if self.node else None,
            error=self._driver_error or self._fatal or self._filter_error() or self.warning
            or self._skipped_text() or self._dns_warning,
            unreachable_since=self.unreachable_since,
            packet_filter=self.filter,
            nat=self.nat.kind,
        )

    def _skipped_text(self) -> str | None:
        if not self._skipped or self.netmap is None:
            return None
        return f"ignored {len(self._skipped)} unsafe netmap peer(s): " + "; ".join(self._skipped)

    # -- internals -------------------------------------------------------------------------

    def _set_want_running(self, value: bool) -> None:
        self.want_running = value
        prefs = self.store.load_prefs()
        prefs.want_running = value
        self.store.save_prefs(prefs)

    async def _moved(self) -> None:
        rebind = getattr(self.driver, "rebind", None)  # wireguard-go only (backend/wg)
        try:
            if rebind is not None and self.driver_up:
                await rebind()
            await self._check_endpoints()
        except DriverError as e:
            log.warning("after an address change: %s", e)

    def _server_urls(self) -> list[str]:
        """Every coordination server URL we know (the NAT probe asks each one's echo)."""
        urls = list(self.netmap.servers) if self.netmap else []
        return urls + ([base_url(self.node.server_url)] if self.node else [])

    def _current_server(self) -> str:
        assert self.node is not None
        return self._servers.current if self._servers else base_url(self.node.server_url)

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)  # type: ignore[arg-type]
        self._tasks.append(task)

    async def _stop_tasks(self) -> None:
        me = asyncio.current_task()  # the headless login calls login(), which stops tasks
        tasks = [t for t in self._tasks if t is not me]
        self._tasks = [t for t in self._tasks if t is me]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _go_up(self) -> None:
        """Interface up (adopting an existing one), persisted netmap applied, loops started."""
        assert self.node is not None
        try:
            await self.driver.start()
            self._driver_started = True
            self._driver_error = None
        except DriverError as e:
            self._driver_error = f"WireGuard: {e}"
            log.error("cannot start the WireGuard interface: %s", e)
            self._recompute()
            return
        if self.netmap is not None:
            await self._apply()
        if self._control is None:
            ca = self.store.load_ca()
            if ca is None:
                self._fatal = "the network CA is missing from the state dir: log in again"
                self._recompute()
                return
            self._control = ControlClient(pinned_context(ca), event_hooks=self._hooks)
        if self._servers is None or base_url(self.node.server_url) not in self._servers.urls:
            self._servers = ServerList(base_url(self.node.server_url))
        if self.netmap and self.netmap.servers:
            self._servers.update(self.netmap.servers)
        self._reported = None
        poller = Poller(
            self._control, self._servers, self.node.node_token,
            # Ask for a full map first: after a restart our version may be unknown to the
            # server, and a full answer also repairs anything missed while we were away.
            since=None,
            on_netmap=self._on_netmap, on_fatal=self._on_fatal,
            on_reachable=self._on_reachable, timeout=self.settings.poll_timeout,
        )
        self._spawn(poller.run())
        # The name of the server we poll resolves elsewhere now: give up the old connection.
        self.nat.on_servers_moved = lambda hosts: (
            poller.interrupt() if urlsplit(self._current_server()).hostname in hosts else None
        )
        def probed(problem: str | None) -> None:
            self._on_reachable(problem)
            if problem is not None:
                poller.interrupt()  # its poll may hang on a dead connection (server moved)

        liveness = Liveness(
            self._control, self._servers, on_reachable=probed,
            on_recovered=poller.wake, interval_s=self.settings.control_probe_s,
        )
        self._spawn(liveness.run())
        self._spawn(self._housekeeping())
        self._spawn(self.nat.run())
        self._recompute()

    async def _go_down(self) -> None:
        await self._stop_tasks()
        await self.dns.stop()
        self._dns_warning = None
        if self.unreachable_since is not None:
            # Nobody asks the server while down: the next `up` finds out afresh.
            self.warning, self.unreachable_since = None, None
        if self._driver_started:
            with contextlib.suppress(DriverError):
                await self.driver.close(remove_interface=True)
        await self.filter.remove()
        self._driver_started = False
        self.driver_up = False  # the netmap is applied to a live interface
        self._driver_started = False  # driver.start() succeeded and close() is owed
        self._driver_error = None
        self._recompute()

    async def _apply(self) -> None:
        assert self.netmap is not None and self.node is not None
        try:
            # The netmap is other nodes' data relayed by the server: a peer with an unsafe
            # field is left out (and named), the others are still configured.
            vetted, skipped = vet_netmap(self.netmap, self.node.network)
            config = desired_config(
                vetted, private_key=self._key.b64(), network=self.node.network,
                listen_port=self.settings.listen_port, endpoints=self.selector.chosen(),
            )
        except (NetmapError, ValueError) as e:
            self.driver_up = False
            self._driver_error = f"netmap: {e}"
            log.error("the netmap cannot be applied: %s", e)
            self._recompute()
            return
        # self.netmap stays what the server sent: later deltas (e.g. a bad peer's removal)
        # apply to it, and every apply vets the result again.
        if skipped != self._skipped:
            for line in skipped:
                log.warning("netmap: ignoring %s", line)
            self._skipped = skipped
        # The filter goes in before the peers it governs; without it, no peer at all.
        if not await self.filter.apply(self.netmap.filter):
            config = dataclasses.replace(config, peers=())
        try:
            await self.driver.apply(config)
        except DriverError as e:
            self.driver_up = False
            self._driver_error = f"WireGuard: {e}"
            log.error("applying the netmap failed: %s", e)
        else:
            self.driver_up = True
            self._driver_error = None
            # After the interface has its address: in resolved mode we listen on it.
            self._dns_warning = await self.dns.ensure(self.netmap)
        self._recompute()

    async def _on_netmap(self, answer: Netmap) -> None:
        held = self.netmap
        if not answer.full and not answer.peers_changed and not answer.peers_removed:
            if held is None:
                return  # a delta before any full map: the next full answer repairs it
            if (
                answer.self == held.self
                and answer.filter is None
                and not servers_changed(held, answer)
            ):
                return  # the long poll's "nothing new" answer
        merged = apply_netmap(held, answer)
        if merged == held:
            return
        self.netmap = merged
        self.store.save_netmap(merged)
        if held is not None and (merged.self, merged.peers, merged.filter, merged.domain) == (
            held.self, held.peers, held.filter, held.domain
        ):
            # Only the coordination servers changed (one joined or was removed): persisted
            # above for the jobs (remove-server asks the others); nothing for WireGuard.
            log.info("netmap v%d: coordination servers %s", merged.version, merged.servers)
            self._recompute()
            return
        if not self._local_nets:  # not checked yet: a LAN neighbour is tried first all the same
            found = await asyncio.to_thread(host_ipv4_interfaces)
            self._local_nets = local_networks(found, self.settings.interface)
        self.selector.update(merged.peers, [], time.monotonic(), local_nets=self._local_nets)
        log.info("netmap v%d: %d peers", merged.version, len(merged.peers))
        await self._apply()

    async def _on_fatal(self, err: ControlError) -> None:
        # Our node token is no longer accepted: the node was deleted or expired. An expired
        # token is renewed with our key proof and the poll goes on; otherwise drop the dead
        # credentials and the tunnels: a new login is needed.
        async def forget() -> None:
            async with self._lock:
                if err.code == "node_token_expired" and await self.renew_token():
                    await self._stop_tasks()
                    await self._go_up()
                    return
                await self._go_down()
                self.store.forget_node()
                self.node, self.netmap = None, None
                self.warning = f"the coordination server no longer knows this device: {err.message}"
                self._recompute()

        # Run outside the poller task, which _go_down would otherwise cancel under our feet.
        self._forget_task = asyncio.get_running_loop().create_task(forget())

    def _on_reachable(self, problem: str | None) -> None:
        """The poller's and the liveness probe's verdict: None when the server answers."""
        if problem is None and self.unreachable_since is None and self.warning is None:
            return
        if problem is not None and self.unreachable_since is None:
            self.unreachable_since = datetime.now(UTC)
            log.warning("%s", problem)
        elif problem is None and self.unreachable_since is not None:
            log.info("the coordination server answers again")
            self.unreachable_since = None
        if problem != self.warning:
            self.warning = problem
            self._recompute()

    async def _housekeeping(self) -> None:
        """Report our endpoints when they change; rotate peer endpoint candidates that do not
        answer; retry a packet filter that could not be installed. Fast (1 s) only while some
        peer is still without a handshake."""
        while True:
            if self.node is not None and (self.node.renew_at or 0) <= time.time():
                await self.renew_token()
            try:
                await self._check_endpoints()
                await self._check_candidates()
                if self.filter.failed and self.netmap is not None:
                    await self._apply()  # e.g. nftables installed since: the tunnels follow
            except DriverError as e:
                log.warning("reading WireGuard state failed: %s", e)
            pending = self.selector.pending()
            await asyncio.sleep(1.0 if pending else self.settings.endpoint_check_s)

    async def _check_endpoints(self) -> None:
        if self.node is None or self._control is None:
            return
        port = await self.driver.listen_port()
        if not port:
            return
        interfaces = await asyncio.to_thread(host_ipv4_interfaces)
        self._local_nets = local_networks(interfaces, self.settings.interface)
        addrs = [(iface, cidr.partition("/")[0]) for iface, cidr in interfaces]
        endpoints = local_endpoints(addrs, port, self.settings.interface)
        if self.settings.advertise_endpoint:  # a name is resolved again at every check
            advertised = await resolve_advertised(self.settings.advertise_endpoint)
            if advertised and advertised not in endpoints:
                endpoints.append(advertised)
        if endpoints == self._reported:
            return
        try:
            await self._control.put_endpoints(
                self._current_server(), self.node.node_token, endpoints
            )
        except (ControlError, ControlUnreachable) as e:
            log.warning("reporting endpoints failed (will retry): %s", e)
            return
        self._reported = endpoints
        log.info("reported endpoints %s", ", ".join(endpoints) or "(none)")

    async def _check_candidates(self) -> None:
        if self.netmap is None or not self.driver_up:
            return
        stats = await self.driver.stats()
        if self.selector.update(
            self.netmap.peers, stats, time.monotonic(), datetime.now(UTC), self._local_nets
        ):
            await self._apply()
