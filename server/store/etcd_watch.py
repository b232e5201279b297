"""What the etcd store's watch yields: one `WatchBatch` per foreign commit (an etcd revision),
decoded from the gateway's watch events by `batches`."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pcloud.shared.etcd.gateway import as_int, unb64

from .base import Kind, StoreError


class Compacted(StoreError):
    """The watch's start revision was compacted away: reload everything, then watch again."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"etcd history compacted up to revision {compact_revision}")
        self.compact_revision = compact_revision


@dataclass(frozen=True)
class Change:
    kind: Kind
    key: str
    value: dict[str, Any] | None  # None: deleted
    revision: int


@dataclass
class WatchBatch:
    """Everything one foreign commit changed (one etcd revision), counter excluded."""

    revision: int
    version: int | None  # None: a write that did not go through commit() (etcdctl, repair)
    writer: str | None
    commit: str | None = None  # the committing txn's token
    changes: list[Change] = field(default_factory=list)


def batches(
    events: list[dict[str, Any]],
    version_key: str,
    split: Callable[[bytes], tuple[Kind, str] | None],
) -> list[WatchBatch]:
    """The events of one watch message as batches by revision, in order. The version counter's
    write carries the commit's version, writer and token; `split` names a record's (kind, key)
    and None for keys that are not records."""
    out: dict[int, WatchBatch] = {}
    for ev in events:
        kv = ev.get("kv", {})
        rev = as_int(kv.get("mod_revision"))
        batch = out.setdefault(rev, WatchBatch(revision=rev, version=None, writer=None))
        raw = unb64(kv.get("key"))
        deleted = ev.get("type") == "DELETE"
        if raw.decode() == version_key and not deleted:
            counter = json.loads(unb64(kv.get("value")))
            batch.version = int(counter.get("version", 0))
            batch.writer = counter.get("writer")
            batch.commit = counter.get("commit")
            continue
        where = split(raw)
        if where is not None:
            value = None if deleted else json.loads(unb64(kv.get("value")))
            batch.changes.append(Change(where[0], where[1], value, rev))
    return [out[r] for r in sorted(out)]
