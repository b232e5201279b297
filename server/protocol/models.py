"""Wire models of the coordination API (DESIGN section 2): the request and answer bodies.

Request bodies refuse unknown fields, so a typo is an error and never silently dropped.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from pcloud.server.protocol.checks import (
    Endpoints,
    Hostname,
    Password,
    Proof,
    PublicKey,
    Role,
    Tag,
    Username,
)


class Request(BaseModel):
    """Base of every request body: unknown fields are an error, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    needs_setup: bool
    store: Literal["sqlite", "etcd"] = "sqlite"


class ServerKey(BaseModel):
    """`GET /api/v1/key`: the server's X25519 proof key and its clock (unix seconds), which a
    node puts in its proof so a device with a wrong clock still proves in time."""

    public_key: str
    time: int


class SetupRequest(Request):
    setup_code: Annotated[str, Field(min_length=1, max_length=256)]
    username: Username
    password: Password


class LoginRequest(Request):
    username: Annotated[str, Field(min_length=1, max_length=64)]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class TokenAnswer(BaseModel):
    token: str
    expires_at: datetime


class SetupAnswer(TokenAnswer):
    username: str


class UserCreate(Request):
    username: Username
    password: Password
    admin: bool = False


class User(BaseModel):
    username: str
    admin: bool
    created_at: datetime


class AuthKeyCreate(Request):
    user: Username | None = None
    reusable: bool = False
    ephemeral: bool = False
    expires_in_s: Annotated[int, Field(ge=1, le=365 * 24 * 3600)] = 3600
    role: Role = "client"
    tags: Annotated[list[Tag], Field(max_length=16)] = []


class AuthKeyCreated(BaseModel):
    key: str
    prefix: str
    expires_at: datetime


class AuthKeyInfo(BaseModel):
    prefix: str
    user: str
    reusable: bool
    ephemeral: bool
    role: Role
    tags: list[str]
    expires_at: datetime
    used: bool
    created_at: datetime


class Peer(BaseModel):
    node_id: int
    hostname: str
    user: str
    role: Role
    tags: list[str]
    public_key: str
    address: str
    endpoints: list[str]
    online: bool
    last_seen: datetime | None
    # `HOSTNAME.<domain>`: the name every device that sees this peer resolves to `address`
    # (DESIGN section 11); empty from servers that predate names.
    dns_name: str = ""


class FilterRule(BaseModel):
    """One rule of what may reach the receiving node (DESIGN section 10): packets from `src`
    (overlay addresses or prefixes; `*` = any peer) with an IP protocol in `proto` (IANA
    numbers; empty = TCP, UDP and ICMP, as a policy rule without `proto`) to a port in `ports`
    (inclusive ranges; ignored for protocols without ports, e.g. ICMP). `src_aliases` and
    `why` are the policy's own words for the sources and the rule (shown by `pcloud filter`)."""

    src: list[str]
    proto: list[int] = []
    ports: list[tuple[int, int]] = []
    src_aliases: list[str] = []
    why: str = ""


class Netmap(BaseModel):
    version: int
    full: bool
    self: Peer
    peers: list[Peer] = []
    peers_changed: list[Peer] = []
    peers_removed: list[int] = []
    servers: list[str] = []
    domain: str = ""  # the network's DNS domain, e.g. pcloud.internal ("" from older servers)
    # The packet filter for this node: always in a full map; in a delta only when it changed
    # (None = unchanged). None in a full map: a server that sends no filter.
    filter: list[FilterRule] | None = None


class RegisterRequest(Request):
    public_key: PublicKey
    hostname: Hostname
    endpoints: Endpoints = []
    role: Role | None = None
    # Proof of the private key of `public_key` (purpose "register"); required for a server-role
    # node, checked whenever given.
    proof: Proof | None = None


class RegisterAnswer(BaseModel):
    node_id: int
    node_token: str
    address: str
    network: str
    netmap: Netmap
    # When the node token stops working unless renewed (POST /nodes/self/token), and the
    # lifetime a renewal gives (None from servers whose node tokens never expire).
    node_token_expires_at: datetime | None = None
    node_token_ttl_s: int | None = None


class RenewRequest(Request):
    """Renew the presented node token (even an expired one) with a proof (purpose "renew")."""

    proof: Proof


class RenewAnswer(BaseModel):
    expires_at: datetime
    ttl_s: int


class EndpointsUpdate(Request):
    endpoints: Endpoints


class RotateKeyRequest(Request):
    public_key: PublicKey
    # Proof of the NEW key (purpose "rotate"); required for a server-role node.
    proof: Proof | None = None


class RotateKeyAnswer(BaseModel):
    node_id: int
    address: str


class NodeUpdate(Request):
    hostname: Hostname | None = None
    role: Role | None = None
    tags: Annotated[list[Tag], Field(max_length=16)] | None = None


class NodeInfo(Peer):
    """A node as an admin sees it (GET /nodes)."""

    created_at: datetime
    ephemeral: bool


class PolicyAnswer(BaseModel):
    policy: str | None


class PolicyWriteAnswer(BaseModel):
    ok: bool = True
    warnings: list[str] = []


class PolicyTestResult(BaseModel):
    src: str
    passed: bool
    errors: list[str] = []


class PeerChange(BaseModel):
    node: str
    gains: list[str]
    loses: list[str]


class PolicyCheckAnswer(BaseModel):
    ok: bool
    errors: list[str]
    warnings: list[str]
    tests: list[PolicyTestResult]
    changes: list[PeerChange]
    # Rules always in force whatever the document says (the network's own infrastructure).
    builtin: list[str] = []
    # Reach the document takes away between server-role nodes: `PUT /acl` refuses it unless
    # forced (`?force=true`).
    server_reach: list[str] = []


class K3sToken(BaseModel):
    """The K3s join token, readable only by server-role nodes."""

    token: str
    server_urls: list[str]

    def __repr__(self) -> str:  # the token must never reach a log line or a traceback
        return f"K3sToken(server_urls={self.server_urls!r})"

    __str__ = __repr__


class K3sPublish(Request):
    """A server-role node publishes the cluster's join token and its own K3s URL."""

    token: Annotated[str, Field(min_length=1, max_length=4096)]
    server_urls: Annotated[
        list[Annotated[str, Field(pattern=r"^https://[^\s/]+$", max_length=256)]],
        Field(min_length=1, max_length=16),
    ]

    def __repr__(self) -> str:  # the token must never reach a log line or a traceback
        return f"K3sPublish(server_urls={self.server_urls!r})"

    __str__ = __repr__


class PromoteRequest(Request):
    """A node asks to become a server with a server-role pre-auth key."""

    auth_key: Annotated[str, Field(min_length=1, max_length=256)]
    # Proof of the node's current key (purpose "promote"): a server-role token needs one.
    proof: Proof | None = None

    def __repr__(self) -> str:
        return "PromoteRequest(auth_key=<redacted>)"

    __str__ = __repr__


class PromoteAnswer(BaseModel):
    node_id: int
    address: str
    role: Role
