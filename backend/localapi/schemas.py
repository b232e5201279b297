"""LEAF: the local API's shapes (DESIGN section 3), what the CLI and the GUI render.

Imports only pydantic and the coordination wire models (themselves a leaf), so the GUI can
depend on this module and `client` without pulling in the backend.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pcloud.server.protocol import FilterRule, Peer, public_host

StateName = Literal["NeedsLogin", "Stopped", "Starting", "Running", "Error"]


class PeerStatus(Peer):
    """A netmap peer plus what the local WireGuard says about it."""

    endpoint: str | None = None  # the endpoint WireGuard currently uses
    last_handshake: datetime | None = None
    rx_bytes: int = 0
    tx_bytes: int = 0
    # How traffic reaches the peer: "direct IP:PORT" (a handshake within 3 minutes on that
    # endpoint) or "no path (REASON)" (DESIGN section 9).
    path: str | None = None


class FilterStatus(BaseModel):
    """The packet filter on the WireGuard interface: `in_force` (with `rules` policy rules,
    `nft_rules` nftables rules), `off` (not connected), `none` (the server sends no filter) or
    `failed` (`reason` says why; tunnels are withheld meanwhile)."""

    state: Literal["in_force", "off", "none", "failed"] = "off"
    rules: int = 0
    nft_rules: int = 0
    reason: str | None = None


class FilterDetail(FilterStatus):
    """`GET /v1/filter`: the status plus the rules themselves (`pcloud filter`)."""

    detail: list[FilterRule] = []


class Status(BaseModel):
    state: StateName
    self: Peer | None = None
    server_url: str | None = None  # the join link we logged in with
    peers: list[PeerStatus] = []
    error: str | None = None  # why we are in Error, or a warning (e.g. server unreachable)
    filter: FilterStatus = FilterStatus()
    # Set while the coordination server does not answer (the tunnels keep working): when the
    # outage began. Cleared within seconds of the server answering again.
    control_unreachable_since: datetime | None = None
    # The kind of NAT this device is behind, e.g. "endpoint-independent" (backend/nat/kind).
    nat: str | None = None

    def unreachable_note(self, now: datetime | None = None) -> str | None:
        """ "Connected, coordination server unreachable since 14:02:11 UTC (35 s ago)", the one
        wording the CLI, the GUI header and the tray share; None unless that is the case."""
        since = self.control_unreachable_since
        if since is None or self.state != "Running":
            return None
        now = now or datetime.now(UTC)
        seconds = max(0, int((now - since).total_seconds()))
        age = f"{seconds} s" if seconds < 120 else f"{seconds // 60} min"
        when = since.astimezone(UTC).strftime("%H:%M:%S UTC")
        return f"Connected, coordination server unreachable since {when} ({age} ago)"


class LoginRequest(BaseModel):
    """Either a pre-auth key or a username and password, with the join link."""

    model_config = ConfigDict(extra="forbid")

    server_url: str = Field(min_length=1)
    auth_key: str | None = None
    username: str | None = None
    password: str | None = None

    @model_validator(mode="after")
    def _one_way(self) -> LoginRequest:
        if self.auth_key and (self.username or self.password):
            raise ValueError("give either auth_key or username and password, not both")
        if not self.auth_key and not (self.username and self.password):
            raise ValueError("give auth_key, or username and password")
        return self

    def __repr__(self) -> str:  # secrets stay out of logs and tracebacks
        return f"LoginRequest(server_url={self.server_url!r}, username={self.username!r})"

    __str__ = __repr__


class JobStep(BaseModel):
    name: str
    state: Literal["pending", "running", "done", "failed", "skipped"]
    detail: str | None = None


class Job(BaseModel):
    id: str
    kind: str
    state: Literal["pending", "running", "done", "failed"]
    steps: list[JobStep] = []
    error: str | None = None
    result: dict[str, Any] | None = None


class JobStarted(BaseModel):
    job_id: str


class InstallServerRequest(BaseModel):
    """`POST /v1/install-server`. With admin credentials the job creates the first admin;
    without them its result carries the setup code for the GUI or CLI to do it."""

    model_config = ConfigDict(extra="forbid")

    network: str | None = None  # default 10.0.0.0/24
    listen: str | None = None  # LAN_ADDR:PORT; default the first LAN address, port 8443
    k3s_binary: str | None = None  # default: the pinned release, SHA-256 verified
    # https://PUBLIC_IP:PORT the home router forwards to this server (pcloud-server --public-url)
    public_url: str | None = None
    admin_username: str | None = None
    admin_password: str | None = None

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is not None:
            public_host(value)  # ValueError names --public-url and what is wrong
            return value.rstrip("/")
        return value

    @model_validator(mode="after")
    def _both_or_neither(self) -> InstallServerRequest:
        if bool(self.admin_username) != bool(self.admin_password):
            raise ValueError("give admin_username and admin_password together")
        return self

    def __repr__(self) -> str:  # the password stays out of logs and tracebacks
        return (
            f"InstallServerRequest(network={self.network!r}, listen={self.listen!r}, "
            f"admin_username={self.admin_username!r})"
        )

    __str__ = __repr__


class JoinServerRequest(BaseModel):
    """`POST /v1/join-server`: approval by a server-role pre-auth key or an admin's token."""

    model_config = ConfigDict(extra="forbid")

    auth_key: str | None = None
    token: str | None = None  # an admin's user token: the backend sets our role to server
    k3s_binary: str | None = None

    def __repr__(self) -> str:
        return f"JoinServerRequest(k3s_binary={self.k3s_binary!r})"

    __str__ = __repr__


class HaJoinRequest(BaseModel):
    """`POST /v1/ha-join`: where this server's coordination server listens (LAN_ADDR:PORT;
    default the first LAN address, port 8443)."""

    model_config = ConfigDict(extra="forbid")

    listen: str | None = None


class ForceNewClusterRequest(BaseModel):
    """`POST /v1/ha-force-new-cluster`: `confirm` must be "yes-i-lost-the-other-servers"."""

    model_config = ConfigDict(extra="forbid")

    confirm: str = ""


class RemoveServerRequest(BaseModel):
    """`POST /v1/remove-server`: `demote` turns the device's role into client at the end."""

    model_config = ConfigDict(extra="forbid")

    demote: bool = False


class CoordRequest(BaseModel):
    """`POST /v1/coord`: one admin call relayed to the coordination server."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["GET", "POST", "PATCH", "DELETE"]
    path: str = Field(min_length=1, max_length=256)
    body: Any = None
    token: str | None = None

    def __repr__(self) -> str:
        return f"CoordRequest(method={self.method!r}, path={self.path!r})"

    __str__ = __repr__


class CoordAnswer(BaseModel):
    status: int
    body: Any = None


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class StatusEvent(BaseModel):
    kind: Literal["status"] = "status"
    status: Status


class JobEvent(BaseModel):
    kind: Literal["job"] = "job"
    job: Job
