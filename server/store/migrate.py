"""Move the state from the embedded SQLite store to the etcd store: checked and resumable.

The check: counts per kind and a SHA-256 over every (kind, key, canonical JSON) plus the version
counter, computed on the source before the copy and on the target after it; they must be equal.

Resumable: a marker key (`/pcloud/_migration`, outside every kind, so loads ignore it) says
"copying" from the first write and "done" at the end. Puts are idempotent and only records that
differ are written, so a run interrupted anywhere is finished by running it again. The counter is
written last. A target that holds records without a marker, or the finished migration of another
store, is refused rather than overwritten.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from pcloud.shared.etcd.gateway import b64, prefix_end, unb64

from .base import KINDS, Delete, Op, Put, Snapshot, Store, StoreError
from .etcd import EtcdStore

MARKER = "_migration"


class MigrationError(StoreError):
    """The migration was refused or its check failed; the source is untouched."""


@dataclass(frozen=True)
class Fingerprint:
    version: int
    counts: dict[str, int]
    digest: str  # SHA-256 hex


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(snap: Snapshot) -> Fingerprint:
    h = hashlib.sha256()
    counts: dict[str, int] = {}
    for kind in KINDS:
        records = snap.records.get(kind, {})
        counts[kind] = len(records)
        for key in sorted(records):
            h.update(f"{kind}\0{key}\0{canonical(records[key])}\n".encode())
    h.update(f"version\0{snap.version}\n".encode())
    return Fingerprint(version=snap.version, counts=counts, digest=h.hexdigest())


@dataclass
class MigrationReport:
    source: Fingerprint
    target: Fingerprint
    written: int  # records put or deleted by this run
    resumed: bool  # a previous run had started and not finished
    already_done: bool  # nothing to do: the target was complete and equal


def _marker_key(target: EtcdStore) -> str:
    return target.prefix + MARKER


def read_marker(target: EtcdStore) -> dict[str, Any] | None:
    answer = target.gateway.call("/v3/kv/range", {"key": b64(_marker_key(target))})
    kvs = answer.get("kvs", [])
    return json.loads(unb64(kvs[0].get("value"))) if kvs else None


def clear(target: EtcdStore) -> None:
    """Delete everything under the store's prefix (a finished copy that no server ever served
    from, to be replaced by a fresh one: the source may have changed since)."""
    end = prefix_end(target.prefix)
    target.gateway.call("/v3/kv/deleterange", {"key": b64(target.prefix), "range_end": b64(end)})
    target.revision = 0


def _write_marker(target: EtcdStore, state: str, source: Fingerprint, *, create: bool) -> None:
    key = b64(_marker_key(target))
    value = {"state": state, "source": asdict(source), "at": dt.datetime.now(dt.UTC).isoformat()}
    body: dict[str, Any] = {
        "success": [{"request_put": {"key": key, "value": b64(canonical(value))}}]
    }
    if create:
        # Two migrations started at once: only one may own the target.
        body["compare"] = [
            {"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
        ]
    answer = target.gateway.call("/v3/kv/txn", body)
    if create and not answer.get("succeeded", False):
        raise MigrationError("another migration into this etcd store started meanwhile")


def with_addr_claims(snap: Snapshot) -> Snapshot:
    """`snap` plus an `addr` record for every node that lacks one: stores written before
    address claims existed have none, and on etcd the claims are what keeps addresses unique
    across servers. The fingerprints compare this form on both sides."""
    addrs = dict(snap.records.get("addr", {}))
    for value in snap.records.get("node", {}).values():
        if "address" in value and "id" in value:
            addrs.setdefault(str(value["address"]), {"node": value["id"]})
    records = dict(snap.records)
    records["addr"] = addrs
    return Snapshot(version=snap.version, records=records)


def _diff(src: Snapshot, dst: Snapshot) -> list[Op]:
    ops: list[Op] = []
    for kind in KINDS:
        have = dst.records.get(kind, {})
        want = src.records.get(kind, {})
        for key, value in want.items():
            if key not in have or canonical(have[key]) != canonical(value):
                ops.append(Put(kind, key, value))
        ops += [Delete(kind, key) for key in have if key not in want]
    return ops


def migrate(
    source: Store,
    target: EtcdStore,
    *,
    after_batch: Callable[[int], None] | None = None,
) -> MigrationReport:
    """Copy `source` into `target` and check it. Stop writers to `source` first.

    `after_batch(n_written_so_far)` runs after each txn (progress; the tests interrupt there).
    """
    src = with_addr_claims(source.load())
    want = fingerprint(src)
    marker = read_marker(target)
    dst = target.load()
    have = fingerprint(dst)
    resumed = False
    if marker is None:
        if any(have.counts.values()) or target.revision:
            raise MigrationError(
                f"etcd already holds a PCloud store ({sum(have.counts.values())} records, "
                f"version {have.version}) that no migration wrote; refusing to overwrite it"
            )
        _write_marker(target, "copying", want, create=True)
    elif marker.get("state") == "done":
        if have == want:
            return MigrationReport(want, have, 0, resumed=False, already_done=True)
        raise MigrationError(
            "etcd holds a finished migration of a different store "
            f"(digest {str(marker.get('source', {}).get('digest', '?'))[:12]}, "
            f"now {have.digest[:12]}); refusing to overwrite it"
        )
    else:
        resumed = True
        _write_marker(target, "copying", want, create=False)

    ops = _diff(src, dst)
    written = 0
    for i in range(0, len(ops), target.max_txn_ops):
        chunk = ops[i : i + target.max_txn_ops]
        target.write_unguarded(chunk)
        written += len(chunk)
        if after_batch is not None:
            after_batch(written)
    if dst.version != src.version or not target.revision:
        # The counter last: a store with a counter but missing records is never "complete".
        target.commit([], src.version)

    got = fingerprint(target.load())
    if got != want:
        raise MigrationError(f"check failed after copy: source {want}, etcd {got}")
    if fingerprint(with_addr_claims(source.load())) != want:
        raise MigrationError("the source changed during the copy; stop the server and run again")
    _write_marker(target, "done", want, create=False)
    return MigrationReport(want, got, written, resumed=resumed, already_done=False)
