"""LocalBackend: the backend core. Owns the facts, turns netmaps into WireGuard config, answers
the local API.

It is the composition of its parts, each a module of this package: `session` (our key, our
registration, the one coordination client), `engine` (interface, packet filter, resolver; the
only caller of `driver.apply`), `intake` (what a netmap answer changes), `housekeeping` (endpoints, candidates, token renewal) and
`server_role` (jobs, services, K3s). The state is never set by hand: every change of a fact ends
in `_recompute()`, which asks `state.next_state` and logs real transitions. Operations (login,
up, down, logout) are serialised by one lock; the poller, the liveness probe and the
housekeeping loop run as tasks that `_stop_tasks` cancels.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

from pcloud.backend.config import BackendSettings
from pcloud.backend.control.client import ControlClient, ControlError, EventHooks
from pcloud.backend.control.stream import StreamPoller
from pcloud.backend.errors import NotLoggedIn
from pcloud.backend.events import Event, EventBus
from pcloud.backend.filter.enforcer import PacketFilter
from pcloud.backend.headless import headless_login
from pcloud.backend.jobs.runner import JobRunner
from pcloud.backend.k3s.driver import K3sDriver
from pcloud.backend.local.engine import Engine
from pcloud.backend.local.housekeeping import Housekeeping
from pcloud.backend.local.intake import intake
from pcloud.backend.local.reach import Reach
from pcloud.backend.local.server_role import ServerRole
from pcloud.backend.local.session import Session
from pcloud.backend.localapi.schemas import LoginRequest, Status
from pcloud.backend.netmap import apply_netmap
from pcloud.backend.persist import NodeInfo, Store
from pcloud.backend.server_supervisor import Services
from pcloud.backend.state import Facts, State, StateTracker
from pcloud.backend.status import build_status
from pcloud.backend.wg.driver import Driver
from pcloud.server.protocol import Netmap, ProofPurpose, RegisterAnswer
from pcloud.shared.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class LocalBackend:
    """The daemon's core: facts and state, the operations of the local API, the netmap intake;
    the work itself is done by its session, engine, housekeeping and server role."""

    def __init__(
        self,
        settings: BackendSettings,
        driver: Driver,
        *,
        bus: EventBus | None = None,
        control_hooks: EventHooks | None = None,
    ) -> None:
        self.settings = settings
        self.bus = bus or EventBus()
        self.store = Store(settings.state_dir)
        self._lock = asyncio.Lock()
        self.session = Session(settings, self.store, control_hooks)
        self.engine = Engine(settings, driver)
        self.housekeeping = Housekeeping(
            settings, self.session, self.engine, netmap=lambda: self.netmap, apply=self._apply
        )
        # The NAT's kind (in status); also says at once when this host moved to another network.
        self.reach = Reach(
            settings, self.session, self.engine, self.housekeeping,
            netmap=lambda: self.netmap, changed=self._recompute,
        )  # fmt: skip
        self.role = ServerRole(settings, self.bus)
        self.netmap: Netmap | None = None
        self.want_running = False
        self._fatal: str | None = None  # e.g. a headless login that cannot succeed
        self.warning: str | None = None  # shown in status.error without leaving Running
        # When the coordination server stopped answering (None while it answers).
        self.unreachable_since: datetime | None = None
        self.tracker = StateTracker()
        self._tasks: list[asyncio.Task[None]] = []
        self._forget_task: asyncio.Task[None] | None = None

    # -- the parts, as the local API, the jobs (JobHost) and the tests see them ------------

    @property
    def node(self) -> NodeInfo | None:
        return self.session.node

    @node.setter
    def node(self, node: NodeInfo | None) -> None:
        self.session.node = node

    @property
    def public_key(self) -> str:
        return self.session.public_key

    @property
    def driver(self) -> Driver:
        return self.engine.driver

    @property
    def filter(self) -> PacketFilter:
        return self.engine.filter

    @property
    def jobs(self) -> JobRunner:
        return self.role.jobs

    @property
    def services(self) -> Services:
        return self.role.services

    @property
    def k3s(self) -> K3sDriver | None:
        return self.role.k3s

    @k3s.setter
    def k3s(self, driver: K3sDriver | None) -> None:
        self.role.k3s = driver

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
            driver_up=self.engine.up,
            fatal_error=self.engine.error or self._fatal or self.engine.filter_error(),
        )

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
        self.engine.dns.recover()  # a killed backend's resolv.conf comes back first
        self.session.load()
        self.netmap = self.store.load_netmap() if self.node else None
        self.want_running = self.store.load_prefs().want_running
        log.info("backend starting: public key %s, node %s", self.public_key, self.node)
        self._recompute()
        if self.node and self.want_running:
            async with self._lock:
                await self._go_up()
        elif self.node is None and self.settings.headless:
            self._spawn(headless_login(self))
        # After the interface is up: K3s and our etcd member bind to our overlay address, and
        # the etcd member before the coordination server that uses it.
        await self.role.resume(self)

    async def shutdown(self) -> None:
        """Backend exit: stop our loops, leave the interface and its tunnels as they are."""
        async with self._lock:
            await self._stop_tasks()
            await self.engine.release()
            await self.session.close()

    # -- operations (local API) ------------------------------------------------------------

    async def login(self, req: LoginRequest) -> None:
        async with self._lock:
            user = self.netmap.self.user if self.netmap else None
            control, ca, answer = await self.session.register(req, user)
            await self._logged_in(control, req.server_url, ca, answer)

    async def adopt_registration(self, server_url: str, ca: str, answer: RegisterAnswer) -> None:
        """Use a registration made elsewhere (install-server registers through the server's
        admin socket) exactly as if `login` had made it."""
        async with self._lock:
            await self._logged_in(self.session.client_for(ca), server_url, ca, answer)

    async def _logged_in(
        self, control: ControlClient, server_url: str, ca: str, answer: RegisterAnswer
    ) -> None:
        await self._stop_tasks()  # before the old client closes: the poller uses it
        await self.session.adopt(control, server_url, ca, answer)
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
            await self.session.farewell()
            self.session.forget()
            self.netmap, self.warning, self._fatal = None, None, None
            self.unreachable_since = None
            self._recompute()

    async def rotate_key(self) -> None:
        """New WireGuard key pair, same node id and address."""
        async with self._lock:
            await self.session.rotate_key()
            new_public = self.public_key
            if self.netmap is not None:
                self_peer = self.netmap.self.model_copy(update={"public_key": new_public})
                self.netmap = self.netmap.model_copy(update={"self": self_peer})
            if self.engine.up:
                await self._apply()
            log.info("rotated key: public key now %s", new_public)

    async def key_proof(self, server: str, purpose: ProofPurpose) -> str:
        """A proof of our WireGuard key for `server` (jobs: promote to server)."""
        return await self.session.key_proof(server, purpose)

    async def relay(
        self, method: str, path: str, *, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        """`POST /v1/coord`: one allowed admin call to the server we are logged in to."""
        return await self.session.relay(method, path, body=body, token=token)

    # -- status ----------------------------------------------------------------------------

    async def status(self) -> Status:
        stats = await self.engine.stats()
        skipped = self.engine.skipped_text() if self.netmap is not None else None
        return build_status(
            self.state, self.engine.shown(self.netmap, self.node), stats,
            server_url=self.node.server_url if self.node else None,
            error=self.engine.error or self._fatal or self.engine.filter_error() or self.warning
            or skipped or self.engine.dns_warning,
            unreachable_since=self.unreachable_since,
            packet_filter=self.engine.filter, relayed=self.engine.relay.labels(),
            nat=self.reach.kind,
        )  # fmt: skip

    # -- internals -------------------------------------------------------------------------

    def _set_want_running(self, value: bool) -> None:
        self.want_running = value
        prefs = self.store.load_prefs()
        prefs.want_running = value
        self.store.save_prefs(prefs)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.create_task(coro))

    async def _stop_tasks(self) -> None:
        me = asyncio.current_task()  # the headless login calls login(), which stops tasks
        tasks = [t for t in self._tasks if t is not me]
        self._tasks = [t for t in self._tasks if t is me]
        await cancel_and_wait(*tasks)

    async def _go_up(self) -> None:
        """Interface up (adopting an existing one), persisted netmap applied, loops started."""
        assert self.node is not None
        if not await self.engine.start():
            self._recompute()
            return
        if self.netmap is not None:
            await self._apply()
        control = self.session.ensure_control()
        if control is None:
            self._fatal = "the network CA is missing from the state dir: log in again"
            self._recompute()
            return
        await self.housekeeping.local_networks()  # read once: the server list's rank uses it
        servers = self.session.servers_for(self.netmap, self.housekeeping.networks)
        self.housekeeping.reported = None  # a new round: tell the server afresh
        # The netmap stream (the long poll against a server without it).
        poller = StreamPoller(
            control, servers, self.node.node_token,
            # Ask for a full map first: after a restart our version may be unknown to the
            # server, and a full answer also repairs anything missed while we were away.
            since=None,
            on_netmap=self._on_netmap, on_fatal=self._on_fatal,
            on_reachable=self._on_reachable, poll_timeout=self.settings.poll_timeout,
            probe_s=self.settings.control_probe_s,
        )  # fmt: skip
        self._spawn(poller.run())  # its /health probe shows a hung server within seconds
        self.reach.follow(poller)
        self._spawn(self.reach.run())
        self._spawn(self.housekeeping.run())
        ca = self.store.load_ca()
        if ca is not None:
            self._spawn(
                self.engine.run_relay(
                    self.session.key, self.node.node_token, ca, lambda: self.netmap, self._apply
                )
            )
        self._recompute()

    async def _go_down(self) -> None:
        await self._stop_tasks()
        if self.unreachable_since is not None:
            # Nobody asks the server while down: the next `up` finds out afresh.
            self.warning, self.unreachable_since = None, None
        await self.engine.stop()
        self._recompute()

    async def _apply(self) -> None:
        assert self.netmap is not None and self.node is not None
        # self.netmap stays what the server sent: later deltas (e.g. a bad peer's removal)
        # apply to it, and every apply vets the result again.
        await self.engine.apply(self.netmap, self.node, self.session.key.b64())
        self._recompute()

    async def _on_netmap(self, answer: Netmap) -> None:
        merged, tunnels = intake(self.netmap, answer)
        if merged is None:
            return
        self.netmap = merged
        self.store.save_netmap(merged)
        if not tunnels:
            # Only the coordination servers changed (one joined or was removed): persisted
            # above for the jobs (remove-server asks the others); nothing for WireGuard.
            log.info("netmap v%d: coordination servers %s", merged.version, merged.servers)
            self._recompute()
            return
        local_nets = await self.housekeeping.local_networks()  # a LAN neighbour first
        self.engine.selector.offer(merged.peers, time.monotonic(), local_nets)
        log.info("netmap v%d: %d peers", merged.version, len(merged.peers))
        await self._apply()

    async def _on_fatal(self, err: ControlError) -> None:
        # Our node token is no longer accepted: the node was deleted or expired. An expired
        # token is renewed with our key proof and the poll goes on; otherwise drop the dead
        # credentials and the tunnels: a new login is needed.
        async def forget() -> None:
            async with self._lock:
                if err.code == "node_token_expired" and await self.session.renew_token():
                    await self._stop_tasks()
                    await self._go_up()
                    return
                await self._go_down()
                self.session.forget()
                self.netmap = None
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
