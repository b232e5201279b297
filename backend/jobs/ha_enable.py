"""HA jobs: `ha-enable` (first server), `ha-join` (every other server), `ha-force-new-cluster`.

Why two jobs and not one: there is no backend-to-backend channel, and each server's secrets (its
etcd member key, its server leaf) are made on that server. So the server that holds the SQLite
store (the one install-server made) moves the state, and each other server then joins on its own:

ha-enable, on the server running the SQLite coordination server:
1. servers online: at least 3 server-role nodes in the netmap, all online (else refused, naming
   the count);
2. etcd member: this server's member (certificate from the network CA, overlay address only)
   started as a new 1-member cluster and healthy;
3. state moved to etcd: the coordination server stopped (no writer during the copy), SQLite
   copied into etcd and checked (counts per kind and a SHA-256 over every record, before and
   after; resumable), then `pcloud-server` restarted with `--store etcd ...`. One step, because
   if the check fails or the server does not come up on etcd, it is started again on SQLite,
   unchanged, and a rerun must copy again (SQLite may have changed meanwhile): the copy that
   no server ever served from is then replaced;
4. other servers: names the servers that still have to run `pcloud ha join`.

ha-join, on each other server-role device:
1. network CA: fetched over the server-role channel (`GET /cluster/ca`, node token of a server),
   checked against the CA fingerprint this device pinned at login, key written 0600;
2. etcd member: added as a learner, started, promoted once in sync (research/etcd.md 7);
3. coordination server: `pcloud-server` on the shared store, listening on this LAN address.

ha-force-new-cluster (survivor of a permanent loss of the other members, confirmed): the member
restarted once with `--force-new-cluster`, then normally, then the server on it alone.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pcloud.backend.control.pinning import ca_fingerprint, parse_join_link
from pcloud.backend.ha import quorum
from pcloud.backend.ha.coord import call_any
from pcloud.backend.ha.member import (
    HaError,
    LocalMember,
    client_url,
    data_dir_exists,
    peer_server_addresses,
    store_args,
    without_store_args,
)
from pcloud.backend.ha.migration import Copied, migrate_to_etcd
from pcloud.backend.jobs.install_server import _listen
from pcloud.backend.jobs.runner import JobSpec, Step, StepContext, StepSkipped
from pcloud.shared import pki
from pcloud.shared.etcd.member import etcd_argv, force_new_cluster_argv

if TYPE_CHECKING:
    from pcloud.backend.jobs.host import JobHost

ENABLE, JOIN, FORCE = "ha-enable", "ha-join", "ha-force-new-cluster"
CONFIRMATION = "yes-i-lost-the-other-servers"


def listen_url(argv: list[str]) -> str:
    """The https URL of a recorded pcloud-server argv's first --listen."""
    listen = argv[argv.index("--listen") + 1]
    return f"https://{listen}"


class HaJobs:
    def __init__(self, backend: JobHost) -> None:
        self.backend = backend
        self.member = LocalMember(backend)

    def enable_spec(self) -> JobSpec:
        return JobSpec(ENABLE, [
            Step("servers online", self.servers_online),
            Step("etcd member", self.first_member),
            Step("state moved to etcd", self.migrated),
            Step("other servers", self.other_servers),
        ])  # fmt: skip

    def join_spec(self) -> JobSpec:
        return JobSpec(JOIN, [
            Step("network CA", self.network_ca),
            Step("etcd member", self.join_member),
            Step("coordination server", self.join_server),
        ])  # fmt: skip

    def force_spec(self) -> JobSpec:
        return JobSpec(FORCE, [
            Step("new 1-member cluster", self.force_new),
            Step("etcd restarted normally", self.restart_normally),
            Step("coordination server", self.server_alone),
        ])  # fmt: skip

    # -- shared --------------------------------------------------------------------------------

    def servers(self) -> dict[str, bool]:
        """Server-role nodes (hostname -> online) as our netmap shows them, us included."""
        netmap = self.backend.netmap
        if netmap is None or netmap.self.role != "server":
            raise HaError("this device is not a server of the network")
        found = {netmap.self.hostname: True}
        found.update({p.hostname: p.online for p in netmap.peers if p.role == "server"})
        return found

    async def start_server(self, endpoints: list[str]) -> str:
        """pcloud-server with the store flags for `endpoints`; its URL once healthy."""
        services = self.backend.services
        argv = services.server_argv
        if not argv:
            raise HaError("no coordination server is recorded on this machine")
        argv = without_store_args(argv) + store_args(endpoints, self.member.tls)
        await services.start_server_argv(argv)
        url = listen_url(argv)
        await services.wait_healthy(url, self.member.tls.ca, timeout=60.0)
        self.member.save(store="etcd", endpoints=endpoints)
        return url

    # -- ha-enable -----------------------------------------------------------------------------

    async def servers_online(self, ctx: StepContext) -> str:
        if not self.backend.services.server_argv:
            raise HaError(
                "run `pcloud ha enable` on the server that runs the coordination server "
                "(the first server, made by install-server)"
            )
        if self.member.on_etcd:
            raise StepSkipped("this coordination server runs on etcd already")
        verdict = quorum.ha_ready(self.servers())
        if not verdict.ok:
            raise HaError(verdict.reason)
        return verdict.reason

    async def first_member(self, ctx: StepContext) -> str:
        member = self.member
        tls = await asyncio.to_thread(member.ensure_cert)
        spec = member.spec()
        if member.load().get("argv") and data_dir_exists(member.data_dir):
            argv = list(member.load()["argv"])  # etcd ignores --initial-* once data exists
        else:
            member.wipe()  # a half-made data dir from a crash before the first start
            argv = etcd_argv(spec, {spec.name: spec.peer_url}, "new")
        ctx.progress(f"starting etcd on {spec.client_url}")
        await member.start(argv)
        await member.wait_healthy()
        return f"{spec.name} on {spec.client_url} (peers {spec.peer_url}), cert {tls.cert.name}"

    async def migrated(self, ctx: StepContext) -> str:
        member, services = self.member, self.backend.services
        if member.on_etcd:
            raise StepSkipped("the coordination server runs on etcd already")
        old_argv = services.server_argv
        assert old_argv is not None
        ctx.progress("stopping the coordination server (no writes during the copy)")
        await services.stop_server()
        try:
            report = await self.copy(ctx)
            ctx.progress("starting the coordination server on etcd")
            url = await self.start_server([client_url(member.address())])
        except BaseException:
            # Nothing switched: the network keeps its SQLite server while the cause is fixed.
            member.save(store=None)
            await services.start_server_argv(old_argv)
            raise
        counts = {k: v for k, v in report.counts.items() if v}
        ctx.set_result(records=report.records, digest=report.source_digest)
        shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        how = "resumed, " if report.resumed else ""
        return f"{how}{shown}; sha256 {report.target_digest[:16]} equal before and after; {url}"

    async def copy(self, ctx: StepContext) -> Copied:
        """SQLite -> etcd, checked, by `pcloud-server migrate-to-etcd`; a finished copy that no
        server used is replaced (see above)."""
        return await migrate_to_etcd(
            self.backend.services.server_dir / "pcloud.db",
            [client_url(self.member.address())],
            self.member.tls,
            lambda written: ctx.progress(f"{written} records copied"),
        )

    async def other_servers(self, ctx: StepContext) -> str:
        me = self.backend.settings.hostname
        others = sorted(n for n in self.servers() if n != me)
        ctx.set_result(join_on=others)
        return f"now run `pcloud ha join` on {', '.join(others)}"

    # -- ha-join -------------------------------------------------------------------------------

    async def network_ca(self, ctx: StepContext) -> str:
        backend = self.backend
        if backend.node is None:
            raise HaError("this device is not in a network")
        answer = await call_any(backend, "GET", "/cluster/ca")
        cert, key = str(answer["ca_cert"]), str(answer["ca_key"])
        pinned = parse_join_link(backend.node.server_url).fingerprint
        if ca_fingerprint(cert) != pinned:
            raise HaError("the CA the server sent is not the one this device pinned: refused")
        tls_dir = backend.services.server_dir / "tls"
        tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        (tls_dir / "ca.pem").write_text(cert)
        pki.write_private(tls_dir / "ca.key", key.encode())
        return f"CA sha256:{pinned[:16]} (the one pinned at login)"

    async def join_member(self, ctx: StepContext) -> str:
        member = self.member
        await asyncio.to_thread(member.ensure_cert)
        spec = member.spec()
        candidates = [client_url(a) for a in peer_server_addresses(self.backend)]
        if not candidates:
            raise HaError("no other server in the netmap")
        admin = member.admin(candidates)
        try:
            members = await asyncio.to_thread(admin.members)
            mine = [m for m in members if spec.peer_url in m.peer_urls]
            if not mine and data_dir_exists(member.data_dir):
                member.wipe()  # left over from an earlier membership: poisoned
            if mine and data_dir_exists(member.data_dir):
                argv = list(member.load().get("argv") or etcd_argv(spec, {}, "existing"))
            else:
                ctx.progress("added as a learner")
                cluster = await asyncio.to_thread(admin.add_learner, spec.name, spec.peer_url)
                argv = etcd_argv(spec, cluster, "existing")
            await member.start(argv)
            await member.wait_healthy()
            ctx.progress("promoting once in sync")
            info = next(m for m in await asyncio.to_thread(admin.members)
                        if spec.peer_url in m.peer_urls)  # fmt: skip
            if info.is_learner:
                await asyncio.to_thread(admin.promote, info.id)
            voters = [m for m in await asyncio.to_thread(admin.members) if not m.is_learner]
        finally:
            admin.close()
        urls = [u for m in voters for u in m.client_urls]
        ctx.data["endpoints"] = [spec.client_url] + [u for u in urls if u != spec.client_url]
        return f"voter {len(voters)} of {len(voters)} ({', '.join(sorted(m.name for m in voters))})"

    async def join_server(self, ctx: StepContext) -> str:
        backend = self.backend
        assert backend.node is not None
        services = backend.services
        if not services.server_argv:
            listen, _ = _listen(ctx.params, backend.settings.interface)
            # Only recorded: start_server() below adds the store flags and starts it. Starting
            # it here would bring up a server on an empty SQLite file that answers (wrongly,
            # "unknown auth key") until the restart with the shared store replaces it.
            domain = backend.netmap.domain if backend.netmap else ""
            services.record_server(listen, backend.node.network, backend.settings.hostname, domain)
        url = await self.start_server(list(ctx.data["endpoints"]))
        ctx.set_result(server_url=url)
        return f"{url} on the shared store"

    # -- ha-force-new-cluster ------------------------------------------------------------------

    async def force_new(self, ctx: StepContext) -> str:
        if ctx.params.get("confirm") != CONFIRMATION:
            raise HaError(f"refused without the confirmation --{CONFIRMATION}")
        member = self.member
        if not data_dir_exists(member.data_dir):
            raise HaError("there is no etcd member on this server to recover from")
        await member.stop()
        argv = await asyncio.to_thread(force_new_cluster_argv, member.spec(), confirm=True)
        await member.start(argv)
        await member.wait_healthy()
        return "this member alone is now the cluster, with all its data"

    async def restart_normally(self, ctx: StepContext) -> str:
        member = self.member
        spec = member.spec()
        # The flag must not stay: the next restart would rewrite the membership again.
        await member.start(etcd_argv(spec, {spec.name: spec.peer_url}, "existing"))
        await member.wait_healthy()
        return "running without --force-new-cluster"

    async def server_alone(self, ctx: StepContext) -> str:
        url = await self.start_server([client_url(self.member.address())])
        return f"{url} on the 1-member cluster; add servers with `pcloud ha join` there"


def start(backend: JobHost, kind: str, params: dict[str, Any]) -> str:
    jobs = HaJobs(backend)
    spec = {ENABLE: jobs.enable_spec, JOIN: jobs.join_spec, FORCE: jobs.force_spec}[kind]()
    clean = {k: v for k, v in params.items() if v is not None}
    return backend.jobs.start(spec, params=clean)


async def resume(backend: JobHost) -> None:
    """At backend start: supervise the etcd member again if this server runs one."""
    await LocalMember(backend).resume()
