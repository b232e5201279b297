"""The join-server job ("Add this machine as server"): a client of the network becomes a server.

Steps, each checking the fact first so the job resumes where it stopped:

1. approved as server: already a server in our netmap, or promoted now, either with a
   server-role pre-auth key (`POST /nodes/self/promote`) or by an admin's user token (`PATCH
   /nodes/{id}` role server, "an admin approves"); waits until our own netmap says so;
2. K3s join token: read over the authenticated API (only server-role nodes may) and written to
   the driver's 0600 token file, never to the job file or a log;
3. K3s: installed and started as a further server with `server: https://10.0.0.1:6443` (any
   published server but ourselves) over the overlay, until this node is Ready;
4. published: our own K3s URL added to the published list, so later servers may join via us.

The admin's user token (like install-server's credentials) is kept in memory only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pcloud.backend.control import client as control
from pcloud.backend.jobs.install_server import (
    K3S_PORT,
    StepFailed,
    k3s_driver,
    server_of,
    wait_backend,
)
from pcloud.backend.jobs.runner import JobSpec, Step, StepContext
from pcloud.server.protocol import K3sToken

if TYPE_CHECKING:
    from pcloud.backend.jobs.host import JobHost

KIND = "join-server"
# Approval secrets (a pre-auth key or an admin's user token) for running jobs, by job id.
_approvals: dict[str, dict[str, str]] = {}


class JoinServer:
    def __init__(self, backend: JobHost) -> None:
        self.backend = backend

    def spec(self) -> JobSpec:
        return JobSpec(
            KIND,
            [
                Step("approved as server", self.approved),
                Step("K3s join token", self.join_token),
                Step("K3s", self.k3s),
                Step("published", self.publish),
            ],
        )

    def is_server(self) -> bool:
        netmap = self.backend.netmap
        return netmap is not None and netmap.self.role == "server"

    async def approved(self, ctx: StepContext) -> str:
        backend = self.backend
        ca, server = server_of(backend)
        assert backend.node is not None
        if self.is_server():
            return "already a server"
        approval = _approvals.get(ctx.job_id, {})
        if approval.get("auth_key"):
            await control.call(
                ca, server, "POST", "/nodes/self/promote",
                token=backend.node.node_token,
                body={
                    "auth_key": approval["auth_key"],
                    # A server-role token is only ever given against a proof of our key.
                    "proof": await backend.key_proof(server, "promote"),
                },
            )  # fmt: skip
            how = "with a server-role pre-auth key"
        elif approval.get("token"):
            await control.call(
                ca, server, "PATCH", f"/nodes/{backend.node.node_id}",
                token=approval["token"], body={"role": "server"},
            )  # fmt: skip
            how = "by an admin"
        else:
            raise StepFailed(
                "an admin must approve this device: give a server-role pre-auth key "
                "(--auth-key-file FILE) or an admin's name (--admin-user NAME)"
            )
        await wait_backend(backend, self.is_server, "the netmap to show role server")
        return f"promoted {how}"

    async def join_token(self, ctx: StepContext) -> str:
        backend = self.backend
        ca, server = server_of(backend)
        assert backend.node is not None
        answer = await control.call(
            ca, server, "GET", "/cluster/k3s", token=backend.node.node_token
        )
        published = K3sToken.model_validate(answer)
        own = f"https://{backend.node.address}:{K3S_PORT}"
        others = [u for u in published.server_urls if u != own]
        if not others:
            raise StepFailed("no other K3s server is published to join")
        driver = k3s_driver(backend, ctx.params.get("k3s_binary"))
        driver.ensure_token(published.token)
        ctx.data["server_url"] = others[0]
        return f"cluster at {', '.join(others)}"

    async def k3s(self, ctx: StepContext) -> str:
        backend = self.backend
        assert backend.node is not None
        node_ip, name = backend.node.address, backend.settings.hostname
        driver = k3s_driver(backend, ctx.params.get("k3s_binary"))
        await driver.install()
        cfg = driver.node_config(
            node_ip=node_ip,
            node_name=name,
            flannel_iface=backend.settings.interface,
            server_url=str(ctx.data["server_url"]),
            tls_san=[node_ip, name],
        )
        backend.services.remember_k3s("server")
        ctx.progress(f"joining {ctx.data['server_url']} over the overlay")
        token = driver.paths.token_file.read_text()
        node = await driver.join(cfg, token)
        return f"node {node.name} Ready ({node.internal_ip}) via {ctx.data['server_url']}"

    async def publish(self, ctx: StepContext) -> str:
        backend = self.backend
        ca, server = server_of(backend)
        assert backend.node is not None
        own = f"https://{backend.node.address}:{K3S_PORT}"
        driver = k3s_driver(backend, None)
        await control.call(
            ca, server, "PUT", "/cluster/k3s",
            token=backend.node.node_token,
            # Exactly the token we joined with: the cluster has one.
            body={"token": driver.paths.token_file.read_text().strip(), "server_urls": [own]},
        )  # fmt: skip
        ctx.set_result(k3s_url=own, address=backend.node.address)
        return f"K3s API {own} published"


def start(backend: JobHost, params: dict[str, Any], approval: dict[str, str]) -> str:
    """Start (or resume) the join-server job; returns its id."""
    job = JoinServer(backend)
    clean = {k: v for k, v in params.items() if v is not None}
    job_id = backend.jobs.start(job.spec(), params=clean)
    secrets = {k: v for k, v in approval.items() if v}
    if secrets:
        _approvals[job_id] = secrets
    return job_id
