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

Kind = Literal["user", "token", "authkey", "node", "policy", "meta"]
KINDS: tuple[Kind, ...] = ("user", "token", "authkey", "node", "policy", "meta")


@dataclass(frozen=True)
class Put:
    kind: Kind
    key: str
    value: Mapping[str, Any]


@dataclass(frozen=True)
class Delete:
    kind: Kind
    key: str


Op = Put | Delete


@dataclass
class Snapshot:
    """Everything the store holds, as loaded at start."""

    version: int
    records: dict[Kind, dict[str, dict[str, Any]]]


class StoreError(Exception):
    """The store could not complete a transaction; nothing of it was applied."""


class Store(Protocol):
    def load(self) -> Snapshot:
        """Read every record and the version counter."""

    def commit(self, ops: Iterable[Op], version: int) -> None:
        """Apply `ops` and set the version counter, all or nothing."""

    def close(self) -> None: ...
