"""The store interface: typed records kept as JSON under (kind, key), written in transactions.

The coordination server holds its working set in memory and writes through to a `Store`. Every
change is one `commit` of puts and deletes together with the new version counter, so a restart
loses nothing and never sees half a change. SQLite implements it today; an etcd implementation
(DESIGN section 8) maps (kind, key) to etcd keys and the commit to one guarded transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

# Defined with the shared etcd client that raises them; the server's code takes them from here.
from pcloud.shared.errors import StoreError as StoreError
from pcloud.shared.errors import Unavailable as Unavailable

# "addr" holds one record per allocated overlay address (key: the IP, value: {"node": id}),
# written with `Claim` so two servers can never hand out the same address.
Kind = Literal["user", "token", "authkey", "node", "policy", "meta", "addr"]
KINDS: tuple[Kind, ...] = ("user", "token", "authkey", "node", "policy", "meta", "addr")


@dataclass(frozen=True)
class Put:
    kind: Kind
    key: str
    value: Mapping[str, Any]


@dataclass(frozen=True)
class Delete:
    kind: Kind
    key: str


@dataclass(frozen=True)
class Claim:
    """Create `key` with `value` only if it does not exist; otherwise the whole commit fails.

    The guard for uniqueness across servers (an overlay address, `("addr", ip)`): a claim that
    finds the key taken raises `ClaimTaken` and nothing of the commit is applied. Release a claim
    with a plain `Delete`.
    """

    kind: Kind
    key: str
    value: Mapping[str, Any]


Op = Put | Delete | Claim


@dataclass
class Snapshot:
    """Everything the store holds, as loaded at start."""

    version: int
    records: dict[Kind, dict[str, dict[str, Any]]]


class Conflict(StoreError):
    """Another writer committed since this store last read or wrote: reload, then retry.

    `revision` is the store's revision of the version counter now (etcd: its mod_revision),
    `version` the counter's value there, so the caller knows how far behind it is.
    """

    def __init__(self, message: str, *, revision: int, version: int) -> None:
        super().__init__(message)
        self.revision = revision
        self.version = version


class ClaimTaken(StoreError):
    """A `Claim` found its key already present; nothing of the commit was applied."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key} is already claimed")
        self.kind = kind
        self.key = key


StoreKind = Literal["sqlite", "etcd"]


class Store(Protocol):
    kind: StoreKind

    def load(self) -> Snapshot:
        """Read every record and the version counter."""

    async def aload(self) -> Snapshot:
        """`load` from the event loop (a store over the network does not block it)."""

    def commit(self, ops: Iterable[Op], version: int) -> None:
        """Apply `ops` and set the version counter, all or nothing."""

    async def acommit(self, ops: Iterable[Op], version: int) -> None:
        """`commit` from the event loop (a store over the network does not block it)."""

    def close(self) -> None: ...
