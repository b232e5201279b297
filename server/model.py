"""Records the server keeps (users, sessions, auth keys, nodes) and their JSON form in the store.

These are rows, not wire shapes: hashes live here and never reach an answer; `netmap.build` and
the routers turn records into `protocol` models.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from .protocol import Role

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _to_json(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_to_json(v) for v in value]
    return value


def to_record(obj: Any) -> dict[str, Any]:
    return {f.name: _to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def from_record(cls: type[T], data: dict[str, Any]) -> T:
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        if value is not None and f.type in ("dt.datetime", "dt.datetime | None"):
            value = dt.datetime.fromisoformat(value)
        elif isinstance(value, list) and str(f.type).startswith("tuple"):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


@dataclass
class UserRec:
    username: str
    admin: bool
    password_hash: str
    created_at: dt.datetime


@dataclass
class TokenRec:
    digest: str
    username: str
    expires_at: dt.datetime


@dataclass
class AuthKeyRec:
    prefix: str
    digest: str
    user: str
    reusable: bool
    ephemeral: bool
    role: Role
    tags: tuple[str, ...]
    expires_at: dt.datetime
    created_at: dt.datetime
    used: bool = False


@dataclass(slots=True)  # one per node: no per-instance __dict__
class NodeRec:
    id: int
    public_key: str
    hostname: str
    user: str
    role: str  # protocol.Role once State.register/update_node take a Role
    tags: tuple[str, ...]
    address: str
    endpoints: tuple[str, ...]
    token_digest: str
    created_at: dt.datetime
    ephemeral: bool = False
    last_seen: dt.datetime | None = None
    # The source address the server saw on the node's last request (first endpoint candidate).
    observed: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # When the node token stops working unless renewed with a key proof (None: a token from
    # before node tokens expired, or the admin socket's first server; see accounts.node_for_token).
    token_expires_at: dt.datetime | None = None
    # Whether the current token was issued against a proof of the node's private key: server
    # secrets are handed only to a proven server-role token (a client token an admin promotes
    # by PATCH must be renewed with a proof first).
    proven: bool = False

    def all_endpoints(self) -> list[str]:
        out: list[str] = []
        if self.observed:
            out.append(self.observed)
        out += [e for e in self.endpoints if e not in out]
        return out
