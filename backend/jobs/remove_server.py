"""The remove-server job: this server leaves the network's control plane (DESIGN section 5).

Steps, each checking the fact first so a rerun resumes where it stopped:

1. quorum: refused, with the reason, unless both raft stores keep quorum without this node: K3s's
   embedded etcd (its server nodes' Ready condition, from this node's K3s) and ours (members'
   health over the gateway). A server still holding the only (SQLite) coordination store is
   refused too: nothing else could serve the network;
2. drained: `kubectl drain` of this node (skipped once the node is gone);
3. K3s node deleted: `kubectl delete node` (skipped when absent);
4. left our etcd: this member removed through the other members (leadership moved off it
   first), then its process stopped and its poisoned data dir wiped;
5. coordination server stopped: stopped and no longer resumed at backend start, then its record
   (meta `server:<hostname>`) withdrawn through another server (`DELETE /cluster/servers/self`)
   so netmaps stop listing its URLs; clients fail over to the other servers the netmap lists;
6. K3s uninstalled;
7. demoted (with --demote): the role becomes client through another server
   (`POST /nodes/self/demote`), the device keeps its address and tunnels.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pcloud.backend.control.errors import ControlError
from pcloud.backend.ha import quorum
from pcloud.backend.ha.coord import call_any
from pcloud.backend.ha.member import HaError, LocalMember, client_url
from pcloud.backend.jobs.ha_enable import listen_url
from pcloud.backend.jobs.install_server import k3s_driver, wait_backend
from pcloud.backend.jobs.runner import JobSpec, Step, StepContext, StepSkipped
from pcloud.backend.k3s.driver import K3sDriver, K3sError

if TYPE_CHECKING:
    from pcloud.backend.jobs.host import JobHost

KIND = "remove-server"
K3S_SERVER_ROLES = ("control-plane", "etcd", "master")


class RemoveServer:
    def __init__(self, backend: JobHost) -> None:
        self.backend = backend
        self.member = LocalMember(backend)
        self.name = backend.settings.hostname

    def spec(self) -> JobSpec:
        return JobSpec(KIND, [
            Step("quorum", self.quorum),
            Step("drained", self.drain),
            Step("K3s node deleted", self.delete_node),
            Step("left our etcd", self.leave_etcd),
            Step("coordination server stopped", self.stop_server),
            Step("K3s uninstalled", self.uninstall),
            Step("demoted", self.demote),
        ])  # fmt: skip

    def driver(self) -> K3sDriver | None:
        driver = k3s_driver(self.backend, None)
        return driver if driver.paths.binary.exists() else None

    async def k3s_servers(self) -> dict[str, bool] | None:
        """K3s server nodes (name -> Ready), or None when K3s is not on this machine."""
        driver = self.driver()
        if driver is None:
            return None
        nodes = await driver.nodes()
        return {n.name: n.ready for n in nodes if set(n.roles) & set(K3S_SERVER_ROLES)}

    async def etcd_members(self) -> dict[str, bool] | None:
        """Our etcd voters (name -> serving), or None when this server runs no member."""
        record = self.member.load()
        if not record.get("argv"):
            return None
        own = client_url(self.member.address())
        return await self.member.health(list(dict.fromkeys([own, *record.get("endpoints", [])])))

    async def quorum(self, ctx: StepContext) -> str:
        services = self.backend.services
        if services.server_argv and not self.member.on_etcd:
            raise HaError(
                "this server holds the network's only coordination store (SQLite): "
                "enable HA first (`pcloud ha enable`, then `pcloud ha join` on the others)"
            )
        reasons = []
        try:
            k3s = await self.k3s_servers()
        except K3sError as exc:
            raise HaError(f"cannot list K3s nodes to check its quorum: {exc}") from None
        ours = await self.etcd_members()
        for store, healthy in (("K3s's etcd", k3s), ("PCloud's etcd", ours)):
            if healthy is None:
                reasons.append(f"{store}: not on this server")
                continue
            verdict = quorum.can_leave(store, self.name, healthy)
            if not verdict.ok:
                raise HaError(f"refused: {verdict.reason}")
            reasons.append(verdict.reason)
        return "; ".join(reasons)

    async def drain(self, ctx: StepContext) -> str:
        driver = self.driver()
        if driver is None or self.name not in {n.name for n in await driver.nodes()}:
            raise StepSkipped("no K3s node here")
        await driver.drain(self.name)
        return f"{self.name} drained"

    async def delete_node(self, ctx: StepContext) -> str:
        driver = self.driver()
        if driver is None or self.name not in {n.name for n in await driver.nodes()}:
            raise StepSkipped("no K3s node here")
        await driver.delete_node(self.name)
        withdrawn = "; its K3s URL withdrawn from the published list"
        try:
            await call_any(self.backend, "POST", "/cluster/k3s/withdraw", body={})
        except ControlError as exc:
            if exc.status != 404:
                raise
            withdrawn = "; this coordination server cannot withdraw K3s URLs yet"
        return f"node {self.name} deleted{withdrawn}"

    async def leave_etcd(self, ctx: StepContext) -> str:
        member = self.member
        record = member.load()
        if not record.get("argv"):
            raise StepSkipped("no etcd member here")
        spec = member.spec()
        if "etcd_others" not in ctx.data:
            # The other members' URLs, asked of our own member while it still runs, and kept
            # for a rerun: once removed, this member can no longer tell them.
            known = [spec.client_url, *(record.get("endpoints") or [])]
            members = await member.members(list(dict.fromkeys(known)))
            ctx.data["etcd_others"] = [
                u for m in members if spec.peer_url not in m.peer_urls for u in m.client_urls
            ]
        others = list(ctx.data["etcd_others"])
        await member.leaving()
        if others:
            admin = member.admin(others)
            try:
                mine = [m for m in await asyncio.to_thread(admin.members)
                        if spec.peer_url in m.peer_urls]  # fmt: skip
                if mine:
                    ctx.progress("moving leadership off this member and removing it")
                    await asyncio.to_thread(admin.remove, mine[0].id)
            except Exception:
                # Still a member: supervised and resumed again, as before this step.
                await member.start(list(record["argv"]))
                raise
            finally:
                admin.close()
        # Through the backend's one etcd supervisor, the removal recorded before the stop: no
        # supervisor and no restarted backend relaunches a member that was removed.
        await member.remove()
        return f"member {spec.name} removed; {len(others)} members remain; data dir wiped"

    async def stop_server(self, ctx: StepContext) -> str:
        services = self.backend.services
        argv = services.server_argv
        done = []
        if argv:
            url = listen_url(argv)
            ctx.data["own_server"] = url
            await services.stop_server(forget=True)
            self.member.save(store=None)
            done.append(f"{url} stopped")
        # After the stop (a running server would still be listed by those it answers), and on
        # every run: a rerun whose server is already stopped still withdraws a record left over.
        withdrawn = await self.withdraw_server(ctx)
        if withdrawn:
            done.append(f"{', '.join(withdrawn)} withdrawn from the netmaps' server list")
        if not done:
            raise StepSkipped("no coordination server here")
        return "; ".join(done) + "; clients use the other servers"

    async def withdraw_server(self, ctx: StepContext) -> list[str]:
        """This server's record (meta `server:<hostname>`) out of the store, through another
        server; the URLs withdrawn, none when there was nothing left to withdraw."""
        netmap = self.backend.netmap
        if netmap is not None and netmap.self.role != "server":
            return []  # demoted already: a client has no server record to withdraw
        avoid = [str(ctx.data["own_server"])] if ctx.data.get("own_server") else []
        try:
            answer = await call_any(self.backend, "DELETE", "/cluster/servers/self", avoid=avoid)
        except ControlError as exc:
            if exc.status == 404:  # a coordination server older than the route
                return []
            raise
        return [str(u) for u in (answer or {}).get("withdrawn", [])]

    async def uninstall(self, ctx: StepContext) -> str:
        driver = self.driver()
        if driver is None:
            raise StepSkipped("K3s is not installed here")
        await driver.uninstall(self.backend.services.k3s_role or "server")
        self.backend.services.forget_k3s()
        return "K3s stopped and removed"

    async def demote(self, ctx: StepContext) -> str:
        backend = self.backend
        if not ctx.params.get("demote"):
            raise StepSkipped("the device stays a server-role node (no --demote)")
        netmap = backend.netmap
        if netmap is not None and netmap.self.role != "server":
            return f"already a client ({netmap.self.address})"
        avoid = [str(ctx.data["own_server"])] if ctx.data.get("own_server") else []
        await call_any(backend, "POST", "/nodes/self/demote", body={}, avoid=avoid)

        def demoted() -> bool:
            return backend.netmap is not None and backend.netmap.self.role == "client"

        await wait_backend(backend, demoted, "the netmap to show role client")
        assert backend.node is not None
        ctx.set_result(address=backend.node.address, role="client")
        return f"role client, address {backend.node.address} kept"


def start(backend: JobHost, params: dict[str, Any]) -> str:
    job = RemoveServer(backend)
    clean = {k: v for k, v in params.items() if v is not None}
    return backend.jobs.start(job.spec(), params=clean)
