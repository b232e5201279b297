"""The login session: our WireGuard key, our registration (node id, token, address), the network
CA pinned at login and the one `ControlClient` on it.

It does the network side of login (join link, pinning, register), of adopting a registration
made elsewhere, of token renewal, key rotation and logout, and answers key proofs and the local
API's relay. It holds no state machine: `LocalBackend` calls it and recomputes the state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from ipaddress import IPv4Network
from typing import Any

from pcloud.backend import keys
from pcloud.backend.config import BackendSettings
from pcloud.backend.control.client import (
    ControlClient,
    ControlError,
    ControlUnreachable,
    EventHooks,
)
from pcloud.backend.control.pinning import (
    PinningError,
    base_url,
    ca_fingerprint,
    fetch_pinned_ca,
    parse_join_link,
    pinned_context,
)
from pcloud.backend.control.poller import ServerList
from pcloud.backend.control.relay import NotRelayed, check, relay
from pcloud.backend.endpoints import server_rank
from pcloud.backend.errors import LoginFailed, NotLoggedIn, OperationError
from pcloud.backend.localapi.schemas import LoginRequest
from pcloud.backend.persist import NodeInfo, Store, atomic_write
from pcloud.server.protocol import Netmap, ProofPurpose, RegisterAnswer, RegisterRequest

log = logging.getLogger(__name__)


def renew_at(ttl_s: int | None) -> float | None:
    """When to renew a node token that lives `ttl_s` (half-way); None if it never expires."""
    return time.time() + ttl_s / 2 if ttl_s else None


class Session:
    """Who we are to the coordination server, and the one client we talk to it with."""

    def __init__(self, settings: BackendSettings, store: Store, hooks: EventHooks | None) -> None:
        self.settings, self.store = settings, store
        self._hooks = hooks  # tests capture what goes to the server through these
        self.key = keys.PrivateKey.generate()  # replaced by the persisted key in load()
        self.node: NodeInfo | None = None
        self.control: ControlClient | None = None
        # Coordination servers in failover order (the poller moves `current`).
        self.servers: ServerList | None = None

    @property
    def public_key(self) -> str:
        return self.key.public_key()

    def client_for(self, ca: str) -> ControlClient:
        """The one place a ControlClient on the network CA is made."""
        return ControlClient(pinned_context(ca), event_hooks=self._hooks)

    def load(self) -> None:
        """What we persisted: key, registration, and a client on the pinned CA."""
        self.key = keys.load_or_create_private_key(self.store.key_path)
        self.node = self.store.load_node()
        ca = self.store.load_ca()
        if ca:
            self.control = self.client_for(ca)

    async def close(self) -> None:
        if self.control:
            await self.control.aclose()

    def ensure_control(self) -> ControlClient | None:
        """The client, made from the persisted CA if need be; None when the CA is missing."""
        if self.control is None:
            ca = self.store.load_ca()
            if ca is None:
                return None
            self.control = self.client_for(ca)
        return self.control

    def servers_for(
        self, netmap: Netmap | None, local_nets: Callable[[], list[IPv4Network]]
    ) -> ServerList:
        """The failover list: our join link's server, then the netmap's (kept across ups),
        those on one of `local_nets` (this host's networks, as last read) first."""
        assert self.node is not None
        first = base_url(self.node.server_url)
        if self.servers is None or first not in self.servers.urls:
            self.servers = ServerList(first, rank=lambda url: server_rank(url, local_nets()))
        if netmap and netmap.servers:
            self.servers.update(netmap.servers)
        return self.servers

    def current_server(self) -> str:
        assert self.node is not None
        return self.servers.current if self.servers else base_url(self.node.server_url)

    # -- login -----------------------------------------------------------------------------

    async def register(
        self, req: LoginRequest, user: str | None
    ) -> tuple[ControlClient, str, RegisterAnswer]:
        """Pin the join link's CA and register our key: (client, CA, answer), or LoginFailed.
        `user` is who is logged in here now (named when the server says the key is taken)."""
        try:
            link = parse_join_link(req.server_url)
            ca = self.store.load_ca()
            if not ca or ca_fingerprint(ca) != link.fingerprint:
                ca = await fetch_pinned_ca(link)
        except PinningError as e:
            raise LoginFailed(str(e), code="pinning_failed") from None
        control = self.client_for(ca)
        try:
            bearer = req.auth_key
            if bearer is None:
                assert req.username and req.password
                bearer = (await control.login(link.base_url, req.username, req.password)).token
            answer = await control.register(
                link.base_url,
                bearer,
                RegisterRequest(
                    public_key=self.key.public_key(),
                    hostname=self.settings.hostname,
                    endpoints=[],  # reported as soon as the interface has its port
                    # Every login proves our key: the server needs it for a server-role
                    # node, and a proven token is what server secrets are handed to.
                    proof=await control.proof(link.base_url, self.key, "register"),
                ),
            )
        except ControlError as e:
            await control.aclose()
            message = self._refused(e, user)
            raise LoginFailed(message, code=e.code, http_status=e.status) from None
        except ControlUnreachable as e:
            await control.aclose()
            raise LoginFailed(str(e), code="server_unreachable", http_status=502) from None
        return control, ca, answer

    def _refused(self, err: ControlError, user: str | None) -> str:
        """The server's refusal, in terms of this device: a key registered to another owner
        means another account is logged in here (the same account may log in again)."""
        if err.code != "public_key_taken":
            return err.message
        if self.node is not None:
            return (
                f"this device is logged in as {user or 'another user'} on "
                f"{base_url(self.node.server_url)}; "
                "run `pcloud logout` first to log in as someone else"
            )
        return (
            "this device's key belongs to another account's device on that server: an admin "
            f"removes it with `pcloud-server admin nodes delete {self.settings.hostname}`"
        )

    async def adopt(
        self, control: ControlClient, server_url: str, ca: str, answer: RegisterAnswer
    ) -> NodeInfo:
        """Make `answer` our registration (persisted) and `control` our client."""
        if self.control and self.control is not control:
            await self.control.aclose()
        self.control = control
        self.store.save_ca(ca)
        self.node = NodeInfo(
            node_id=answer.node_id, node_token=answer.node_token, server_url=server_url,
            address=answer.address, network=answer.network, hostname=self.settings.hostname,
            renew_at=renew_at(answer.node_token_ttl_s),
        )  # fmt: skip
        self.store.save_node(self.node)
        return self.node

    async def farewell(self) -> None:
        """Tell the server we log out (best effort: an admin can remove the node)."""
        if self.node and self.control:
            try:
                await self.control.delete_self(base_url(self.node.server_url), self.node.node_token)
            except (ControlError, ControlUnreachable) as e:
                log.warning("could not tell the server about the logout: %s", e)

    def forget(self) -> None:
        """Drop our registration (the key stays: it is this device's)."""
        self.store.forget_node()
        self.node = None

    # -- credentials -----------------------------------------------------------------------

    async def renew_token(self) -> bool:
        """Extend our node token with a key proof (before it expires, or once it has); False
        when the server would not (the node is gone) or cannot be reached now."""
        if self.node is None or self.control is None:
            return False
        try:
            answer = await self.control.renew(self.current_server(), self.node.node_token, self.key)
        except (ControlError, ControlUnreachable) as e:
            log.warning("renewing the node token failed (retrying in a minute): %s", e)
            self.node.renew_at = time.time() + 60
            return False
        self.node.renew_at = renew_at(answer.ttl_s)
        self.store.save_node(self.node)
        log.info("node token renewed until %s", answer.expires_at.isoformat())
        return True

    async def rotate_key(self) -> None:
        """New WireGuard key pair for the same node: the server first, then our file."""
        if self.node is None or self.control is None:
            raise NotLoggedIn()
        new = keys.PrivateKey.generate()
        try:
            await self.control.rotate_key(self.current_server(), self.node.node_token, new)
        except (ControlError, ControlUnreachable) as e:
            raise LoginFailed(f"key rotation failed: {e}", code="rotate_failed") from None
        atomic_write(self.store.key_path, (new.b64() + "\n").encode())
        self.key = new

    async def key_proof(self, server: str, purpose: ProofPurpose) -> str:
        """A proof of our WireGuard key for `server` (jobs: promote to server)."""
        if self.control is None:
            raise NotLoggedIn()
        return await self.control.proof(server, self.key, purpose)

    async def relay(
        self, method: str, path: str, *, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        """`POST /v1/coord`: one allowed admin call to the server we are logged in to, its
        answer as it came (error answers included)."""
        try:
            check(method, path)  # refused before anything else, logged in or not
            ca = self.store.load_ca()
            if self.node is None or ca is None:
                raise NotLoggedIn()
            return await relay(
                ca, base_url(self.node.server_url), method, path, body=body, token=token
            )
        except NotRelayed as e:
            raise OperationError(str(e), code="path_not_allowed", http_status=400) from None
        except ControlUnreachable as e:
            raise OperationError(str(e), code="server_unreachable", http_status=502) from None
