"""Wire models of the coordination API (DESIGN section 2), shared by the server and the backend.

This is a leaf module: it imports only pydantic and the standard library so the backend can depend
on it without pulling in the server. Request bodies refuse unknown fields; the validators name the
field that is wrong so the server's 422 answers say what to fix.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

Role = Literal["client", "server"]

HOSTNAME_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
USERNAME_RE = re.compile(r"^[a-z][a-z0-9._-]{0,62}$")
TAG_RE = re.compile(r"^tag:[a-z0-9][a-z0-9-]{0,62}$")
MAX_ENDPOINTS = 16


def check_public_key(value: str) -> str:
    """A WireGuard public key: standard base64 of exactly 32 bytes."""
    if len(value) != 44 or not value.endswith("="):
        raise ValueError("public_key must be 44 characters of base64 (a 32-byte WireGuard key)")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("public_key is not valid base64") from None
    if len(raw) != 32:
        raise ValueError(f"public_key decodes to {len(raw)} bytes, a WireGuard key has 32")
    return value


def check_hostname(value: str) -> str:
    """A DNS label: lower-case letters, digits and dashes, 1-63 characters."""
    if not HOSTNAME_RE.match(value):
        raise ValueError(
            "hostname must be 1-63 lower-case letters, digits or dashes, not starting or "
            "ending with a dash"
        )
    return value


def check_username(value: str) -> str:
    if not USERNAME_RE.match(value):
        raise ValueError(
            "username must start with a lower-case letter and hold at most 63 letters, "
            "digits, '.', '_' or '-'"
        )
    return value


def check_endpoint(value: str) -> str:
    """`ip:port` with an IPv4 address or `[v6]:port`."""
    host, sep, port = value.rpartition(":")
    if not sep:
        raise ValueError(f"endpoint {value!r} must be ip:port")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"endpoint {value!r} does not start with an IP address") from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"endpoint {value!r} has no valid port (1-65535)")
    return value


def check_tag(value: str) -> str:
    if not TAG_RE.match(value):
        raise ValueError(f"tag {value!r} must look like tag:name (lower-case, digits, dashes)")
    return value


PublicKey = Annotated[str, AfterValidator(check_public_key)]
Hostname = Annotated[str, AfterValidator(check_hostname)]
Username = Annotated[str, AfterValidator(check_username)]
Endpoint = Annotated[str, AfterValidator(check_endpoint)]
Tag = Annotated[str, AfterValidator(check_tag)]
Password = Annotated[str, Field(min_length=8, max_length=1024)]


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
    # The packet filter for this node: always in a full map; in a delta only when it changed
    # (None = unchanged). None in a full map: a server that sends no filter.
    filter: list[FilterRule] | None = None


class RegisterRequest(Request):
    public_key: PublicKey
    hostname: Hostname
    endpoints: Annotated[list[Endpoint], Field(max_length=MAX_ENDPOINTS)] = []
    role: Role | None = None


class RegisterAnswer(BaseModel):
    node_id: int
    node_token: str
    address: str
    network: str
    netmap: Netmap


class EndpointsUpdate(Request):
    endpoints: Annotated[list[Endpoint], Field(max_length=MAX_ENDPOINTS)]


class RotateKeyRequest(Request):
    public_key: PublicKey


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

    def __repr__(self) -> str:
        return "PromoteRequest(auth_key=<redacted>)"

    __str__ = __repr__


class PromoteAnswer(BaseModel):
    node_id: int
    address: str
    role: Role
