"""The store on etcd (Debian's etcd-server 3.4): every commit is one revision-guarded transaction.

Layout: a record (kind, key) is `/pcloud/<kind>/<key>` holding its compact JSON; the version
counter is `/pcloud/meta/version` holding `{"version": N, "writer": ID, "commit": TOKEN}`.

`commit(ops, version)` sends ONE txn: compare `mod_revision(version key) == self.revision` (the
revision this store last read or wrote) plus `create_revision == 0` for every `Claim`; on success
it applies every op and the new counter. A concurrent commit on another server changes the
counter's revision first, so ours fails as `Conflict` (reload, then retry) and nothing is lost.
`commit` (a random token per commit) lets `watch` skip this store's own acknowledged commits (one
seen landing while its call is still open is held until the call ends: skipped if acknowledged,
delivered if not) and
recognises our own write when a timed-out attempt was applied and the gateway's retry then found
the revision moved. A commit that ends in `Unavailable` has an unknown outcome: its proposal may
sit in the leader's log and be applied once quorum returns. Its token is then forgotten (so is the
token of a commit that ended any other way than acknowledged, e.g. cancelled), so if it lands,
`watch` delivers it like any other writer's change (and the next commit gets `Conflict`).

Big commits: etcd refuses a txn with more than --max-txn-ops ops (default 128). Our members run
with --max-txn-ops=1024 (etcd_cluster.py); a commit above `max_txn_ops` is refused here with a
clear StoreError rather than split, since a split commit would not be atomic.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

from pcloud.shared.etcd.gateway import (
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_TIMEOUT_S,
    Gateway,
    as_int,
    b64,
    prefix_end,
    unb64,
)

from .base import (
    KINDS,
    Claim,
    ClaimTaken,
    Conflict,
    Delete,
    Kind,
    Op,
    Snapshot,
    StoreError,
    StoreKind,
)
from .etcd_watch import Change, Compacted, WatchBatch, decode_batches, watch_commits

__all__ = ["Change", "Compacted", "EtcdStore", "WatchBatch"]

PREFIX = "/pcloud/"
VERSION_KEY = "meta/version"
MAX_TXN_OPS = 1024  # what etcd_cluster passes as --max-txn-ops
PAGE = 500  # keys per range page at load: bounded answers whatever the store's size


def _dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


class EtcdStore:
    kind: StoreKind = "etcd"

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        prefix: str = PREFIX,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        max_txn_ops: int = MAX_TXN_OPS,
        watch_idle_timeout: float = 20.0,
    ) -> None:
        self.gateway = Gateway(
            endpoints,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            timeout=timeout,
            max_in_flight=max_in_flight,
        )
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.max_txn_ops = max_txn_ops
        self.watch_idle_timeout = watch_idle_timeout
        self.writer_id = secrets.token_hex(8)
        # Tokens of our commits in flight or acknowledged and not yet seen by the watch.
        self._mine: OrderedDict[str, None] = OrderedDict()
        # Async commits in flight: token -> their outcome (True: acknowledged) once known. The
        # watch can see a commit land before its caller hears back; it waits for the outcome.
        self._pending: dict[str, asyncio.Future[bool]] = {}
        self.revision = 0  # mod_revision of the counter as last read or written: the guard
        self.loaded_at = 0  # etcd revision of the last load: watch from loaded_at + 1
        self.version = 0

    # ---- keys -----------------------------------------------------------------------------

    def key_of(self, kind: str, key: str) -> str:
        return f"{self.prefix}{kind}/{key}"

    @property
    def version_key(self) -> str:
        return self.prefix + VERSION_KEY

    def split(self, raw: bytes) -> tuple[Kind, str] | None:
        """(kind, key) of an etcd key under our prefix, None for the counter and foreign keys."""
        text = raw.decode()
        if not text.startswith(self.prefix) or text == self.version_key:
            return None
        kind, _, key = text[len(self.prefix) :].partition("/")
        if kind not in KINDS or not key:
            return None  # e.g. the migration marker
        return kind, key  # type: ignore[return-value]

    # ---- load -----------------------------------------------------------------------------

    def _page_body(self, start: bytes, revision: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "key": b64(start),
            "range_end": b64(prefix_end(self.prefix)),
            "limit": PAGE,
        }
        if revision:
            body["revision"] = str(revision)  # every page reads the same snapshot
        return body

    def _take_page(self, answer: dict[str, Any], snap: Snapshot) -> bytes | None:
        """Fold one range answer into `snap`; returns the next start key or None when done."""
        kvs = answer.get("kvs", [])
        for kv in kvs:
            raw = unb64(kv["key"])
            if raw.decode() == self.version_key:
                counter = json.loads(unb64(kv.get("value")))
                snap.version = int(counter.get("version", 0))
                self.revision = as_int(kv.get("mod_revision"))
                continue
            where = self.split(raw)
            if where is not None:
                snap.records[where[0]][where[1]] = json.loads(unb64(kv.get("value")))
        if answer.get("more") and kvs:
            return unb64(kvs[-1]["key"]) + b"\0"
        return None

    def _start_load(self) -> Snapshot:
        self.revision = 0
        return Snapshot(version=0, records={k: {} for k in KINDS})

    def _finish_load(self, snap: Snapshot, revision: int) -> Snapshot:
        self.loaded_at = revision
        self.version = snap.version
        return snap

    def load(self) -> Snapshot:
        """Every record and the counter, as of one etcd revision (remembered for the guard)."""
        snap = self._start_load()
        start: bytes | None = self.prefix.encode()
        revision = 0
        while start is not None:
            answer = self.gateway.call("/v3/kv/range", self._page_body(start, revision))
            revision = revision or as_int(answer["header"].get("revision"))
            start = self._take_page(answer, snap)
        return self._finish_load(snap, revision)

    async def aload(self) -> Snapshot:
        snap = self._start_load()
        start: bytes | None = self.prefix.encode()
        revision = 0
        while start is not None:
            answer = await self.gateway.acall("/v3/kv/range", self._page_body(start, revision))
            revision = revision or as_int(answer["header"].get("revision"))
            start = self._take_page(answer, snap)
        return self._finish_load(snap, revision)

    # ---- commit ---------------------------------------------------------------------------

    def _txn_body(self, ops: Iterable[Op], version: int) -> tuple[dict[str, Any], str, list[Claim]]:
        token = secrets.token_hex(8)
        compare: list[dict[str, Any]] = [
            {
                "key": b64(self.version_key),
                "target": "MOD",
                "result": "EQUAL",
                "mod_revision": str(self.revision),
            }
        ]
        claims: list[Claim] = []
        # etcd refuses two writes to one key in a txn; the last op on a key is what a
        # sequential apply (SQLite) would leave, so keep only that one.
        final: dict[str, dict[str, Any]] = {}
        for op in ops:
            if op.kind == "meta" and op.key == "version":
                raise StoreError("meta/version is the store's own counter")
            k = self.key_of(op.kind, op.key)
            if isinstance(op, Claim):
                claims.append(op)
                compare.append(
                    {"key": b64(k), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
                )
            final.pop(k, None)
            if isinstance(op, Delete):
                final[k] = {"request_delete_range": {"key": b64(k)}}
            else:
                final[k] = {"request_put": {"key": b64(k), "value": b64(_dump(op.value))}}
        counter = {"version": version, "writer": self.writer_id, "commit": token}
        success = [
            *final.values(),
            {"request_put": {"key": b64(self.version_key), "value": b64(_dump(counter))}},
        ]
        if len(success) > self.max_txn_ops or len(compare) > self.max_txn_ops:
            raise StoreError(
                f"commit of {len(success)} ops exceeds max_txn_ops={self.max_txn_ops} "
                "(etcd --max-txn-ops); split the change or raise the limit on every member"
            )
        failure = [{"request_range": {"key": c["key"]}} for c in compare]
        body = {"compare": compare, "success": success, "failure": failure}
        return body, token, claims

    def _outcome(
        self,
        answer: dict[str, Any],
        version: int,
        token: str,
        claims: list[Claim],
        guard: int | None = None,
    ) -> None:
        # `guard`: the revision the txn compared against. The watch may `advance` while the txn
        # is in flight, so self.revision can no longer tell a conflict from a lost claim.
        guard = self.revision if guard is None else guard
        if answer.get("succeeded", False):
            self.revision = as_int(answer["header"].get("revision"))
            self.version = version
            return
        responses = answer.get("responses", [])
        kvs = responses[0].get("response_range", {}).get("kvs", []) if responses else []
        counter: dict[str, Any] = json.loads(unb64(kvs[0].get("value"))) if kvs else {}
        mod = as_int(kvs[0].get("mod_revision")) if kvs else 0
        if counter.get("commit") == token:
            # A first attempt timed out but was committed; the gateway's retry found the
            # counter moved by that very write. It is ours: success.
            self.revision = mod
            self.version = version
            return
        if mod != guard:
            raise Conflict(
                f"store changed by another writer (revision {guard} -> {mod})",
                revision=mod,
                version=int(counter.get("version", 0)),
            )
        for claim, resp in zip(claims, responses[1:], strict=False):
            if resp.get("response_range", {}).get("kvs"):
                raise ClaimTaken(claim.kind, claim.key)
        raise StoreError("etcd refused the transaction without naming a reason")

    def _track(self, token: str) -> None:
        self._mine[token] = None
        while len(self._mine) > 4096:  # tokens of commits whose events the watch never read
            self._mine.popitem(last=False)

    def commit(self, ops: Iterable[Op], version: int) -> None:
        guard = self.revision
        body, token, claims = self._txn_body(ops, version)
        self._track(token)
        try:
            self._outcome(self.gateway.call("/v3/kv/txn", body), version, token, claims, guard)
        except BaseException:
            # Not applied here (a store error, or the caller gone mid-call): not ours to skip.
            # If it lands all the same, the watch delivers it like another writer's change.
            self._mine.pop(token, None)
            raise

    async def acommit(self, ops: Iterable[Op], version: int) -> None:
        guard = self.revision
        body, token, claims = self._txn_body(ops, version)
        self._track(token)
        outcome = self._pending[token] = asyncio.get_running_loop().create_future()
        acknowledged = False
        try:
            answer = await self.gateway.acall("/v3/kv/txn", body)
            self._outcome(answer, version, token, claims, guard)
            acknowledged = True
        except BaseException:  # cancelled too: see `commit`
            self._mine.pop(token, None)
            raise
        finally:
            del self._pending[token]
            outcome.set_result(acknowledged)

    def write_unguarded(self, ops: Sequence[Op]) -> int:
        """Idempotent puts/deletes in txns of at most `max_txn_ops`, no guard, counter untouched.

        For the migration only (it owns an otherwise unused store); returns the last revision.
        """
        revision = 0
        for i in range(0, len(ops), self.max_txn_ops):
            success: list[dict[str, Any]] = []
            for op in ops[i : i + self.max_txn_ops]:
                k = b64(self.key_of(op.kind, op.key))
                if isinstance(op, Delete):
                    success.append({"request_delete_range": {"key": k}})
                else:
                    success.append({"request_put": {"key": k, "value": b64(_dump(op.value))}})
            answer = self.gateway.call("/v3/kv/txn", {"success": success})
            revision = as_int(answer["header"].get("revision"))
        return revision

    # ---- watch ----------------------------------------------------------------------------

    def advance(self, batch: WatchBatch) -> None:
        """Call once `batch` is applied to the working set: later commits guard on it."""
        if batch.version is not None and batch.revision > self.revision:
            self.revision = batch.revision
            self.version = batch.version

    async def watch(self, from_revision: int | None = None) -> AsyncIterator[WatchBatch]:
        """Other writers' commits from `from_revision` on (default: just after the last load).

        Resumes on the next endpoint from the last revision seen when a stream breaks or its
        member loses the leader; raises Compacted when that revision is gone (reload then).
        """
        start = from_revision if from_revision is not None else self.loaded_at + 1
        commits = watch_commits(
            self.gateway,
            self.prefix,
            start,
            decode=lambda events: decode_batches(events, self.version_key, self.split),
            idle_timeout=self.watch_idle_timeout,
        )
        async for batch in commits:
            token = batch.commit
            if token is not None and token in self._pending:
                # Ours, landed, and its caller has not heard back: whether it counts as ours
                # (applied by the caller) depends on how the call ends. Waited for, not skipped:
                # a commit whose call failed after it landed is applied nowhere else.
                if not await asyncio.shield(self._pending[token]):
                    yield batch
                    continue
            if token is not None and token in self._mine:
                del self._mine[token]  # our own acknowledged commit
            else:
                yield batch

    # ---- membership -----------------------------------------------------------------------

    async def follow_members(self) -> list[str] | None:
        """Point the gateway at the cluster's voting members as etcd lists them right now
        (MemberList), so a member removed from the cluster is never asked again and one that
        joined is; the endpoints now in use, or None when no member answered the list.

        The endpoints given at start keep their order (this server's own member first); new
        members follow. Learners serve no writes and are left out until promoted. The order
        of preference matters little; what matters is that a removed member's address, which
        might one day answer as something else, drops out (issue 12)."""
        try:
            answer = await self.gateway.acall("/v3/cluster/member/list", {})
        except StoreError:
            return None
        voters = [
            url.rstrip("/")
            for m in answer.get("members", [])
            if not m.get("isLearner")
            for url in (m.get("clientURLs") or [])
        ]
        if not voters:
            return None
        current = self.gateway.endpoints
        ordered = [u for u in current if u in voters] + [u for u in voters if u not in current]
        self.gateway.set_endpoints(ordered)
        return list(self.gateway.endpoints)

    # ---- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        self.gateway.close()

    async def aclose(self) -> None:
        await self.gateway.aclose()
