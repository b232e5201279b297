"""Reading etcd's watch stream: every commit under a prefix, one `WatchBatch` per revision.

`watch_commits` keeps one watch open on some member and moves on to the next endpoint from the
last revision seen when a stream breaks or its member loses the leader; progress notifications
move that revision on, so a reconnect never replays what was delivered. `EtcdStore.watch` skips
the store's own acknowledged commits on top of it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from pcloud.shared.etcd.gateway import Gateway, GatewayError, as_int, b64, prefix_end, unb64

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


def decode_batches(
    events: list[dict[str, Any]],
    version_key: str,
    split: Callable[[bytes], tuple[Kind, str] | None],
) -> list[WatchBatch]:
    """Group one watch answer's events by revision; the version counter's event names the
    commit (writer, token) and records outside the store's layout are left out."""
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


async def watch_commits(
    gateway: Gateway,
    prefix: str,
    next_rev: int,
    *,
    decode: Callable[[list[dict[str, Any]]], list[WatchBatch]],
    idle_timeout: float,
) -> AsyncIterator[WatchBatch]:
    """Every commit under `prefix` from revision `next_rev` on, own commits included; raises
    Compacted when that revision is gone."""
    endpoint = gateway.order()[0]
    backoff = 0.05
    while True:
        body = {
            "create_request": {
                "key": b64(prefix),
                "range_end": b64(prefix_end(prefix)),
                "start_revision": str(next_rev),
                "progress_notify": True,
            }
        }
        try:
            async with gateway.stream(
                endpoint, "/v3/watch", body, idle_timeout=idle_timeout
            ) as lines:
                async for msg in lines:
                    if "error" in msg:
                        break  # e.g. 503 no leader: try another member
                    result = msg.get("result", {})
                    if result.get("canceled"):
                        compact = as_int(result.get("compact_revision"))
                        if compact:
                            raise Compacted(compact)
                        break
                    backoff = 0.05
                    for batch in decode(result.get("events", [])):
                        next_rev = batch.revision + 1
                        yield batch
                    if not result.get("events") and not result.get("created"):
                        # A progress notification (sent only to a synced watcher):
                        # everything up to its header revision was delivered.
                        header_rev = as_int(result.get("header", {}).get("revision"))
                        next_rev = max(next_rev, header_rev + 1)
        except (httpx.TransportError, json.JSONDecodeError):
            pass
        except GatewayError as exc:
            if exc.status < 500:
                raise
        # The list may have been swapped meanwhile (follow_members): stay within it.
        endpoint = (endpoint + 1) % len(gateway.endpoints)
        # Backoff between reconnects, not a synchronisation: a dead member answers at once.
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 2.0)
