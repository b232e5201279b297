"""EtcdStore's txn building and answer handling, the member command line and helpers, without
a running etcd (the integration tests run the real thing)."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from pcloud.server.security.tls import TlsFiles, ensure_ca
from pcloud.server.store.base import (
    Claim,
    ClaimTaken,
    Conflict,
    Delete,
    Put,
    StoreError,
    Unavailable,
)
from pcloud.server.store.etcd import EtcdStore, WatchBatch
from pcloud.server.store.etcd_watch import decode_batches
from pcloud.shared.etcd.cluster import disable_debian_unit, retry
from pcloud.shared.etcd.gateway import prefix_end
from pcloud.shared.etcd.member import (
    MemberSpec,
    MemberTls,
    NotConfirmed,
    etcd_argv,
    force_new_cluster_argv,
    issue_member_cert,
)


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def unb64(s: str) -> str:
    return base64.b64decode(s).decode()


def store() -> EtcdStore:
    s = EtcdStore(["http://127.0.0.1:9"])
    s.revision = 41
    return s


def test_txn_guards_on_the_counter_revision_and_claims() -> None:
    s = store()
    body, token, claims = s._txn_body(
        [
            Put("node", "1", {"id": 1}),
            Claim("addr", "10.0.0.1", {"node": 1}),
            Delete("token", "t"),
            Put("node", "1", {"id": 1, "v": 2}),  # the last op on a key wins, as in SQLite
        ],
        5,
    )
    assert body["compare"] == [
        {"key": b64("/pcloud/meta/version"), "target": "MOD", "result": "EQUAL", "mod_revision": "41"},
        {"key": b64("/pcloud/addr/10.0.0.1"), "target": "CREATE", "result": "EQUAL", "create_revision": "0"},
    ]  # fmt: skip
    puts = {
        unb64(op["request_put"]["key"]): json.loads(unb64(op["request_put"]["value"]))
        for op in body["success"]
        if "request_put" in op
    }
    assert puts["/pcloud/node/1"] == {"id": 1, "v": 2}
    assert puts["/pcloud/addr/10.0.0.1"] == {"node": 1}
    assert puts["/pcloud/meta/version"] == {"version": 5, "writer": s.writer_id, "commit": token}
    assert len(body["success"]) == 4  # node/1 once, addr, token delete, counter
    assert [unb64(f["request_range"]["key"]) for f in body["failure"]] == [
        "/pcloud/meta/version",
        "/pcloud/addr/10.0.0.1",
    ]
    assert claims == [Claim("addr", "10.0.0.1", {"node": 1})]


def test_oversized_commits_and_the_counter_key_are_refused_before_any_io() -> None:
    s = store()
    with pytest.raises(StoreError, match="1025 ops exceeds max_txn_ops=1024"):
        s._txn_body([Put("node", str(i), {}) for i in range(1024)], 1)
    with pytest.raises(StoreError, match="own counter"):
        s._txn_body([Put("meta", "version", {})], 1)


def _failure(counter: dict[str, Any] | None, mod: int, *claim_taken: bool) -> dict[str, Any]:
    kvs = [{"mod_revision": str(mod), "value": b64(json.dumps(counter))}] if counter else []
    responses = [{"response_range": {"kvs": kvs} if kvs else {}}]
    responses += [{"response_range": {"kvs": [{}]} if t else {}} for t in claim_taken]
    return {"header": {"revision": "99"}, "responses": responses}


def test_answers_success_conflict_claim_and_our_own_retried_write() -> None:
    s = store()
    s._outcome({"header": {"revision": "42"}, "succeeded": True}, 5, "tok", [])
    assert (s.revision, s.version) == (42, 5)
    with pytest.raises(Conflict) as info:
        s._outcome(_failure({"version": 6, "commit": "other"}, 50), 6, "tok", [])
    assert (info.value.revision, info.value.version) == (50, 6)
    claim = Claim("addr", "10.0.0.2", {"node": 2})
    with pytest.raises(ClaimTaken, match="10.0.0.2"):
        s._outcome(_failure({"version": 5, "commit": "x"}, 42, False, True), 6, "t", [claim, claim])
    # A timed-out attempt that was applied: the retry sees our own token on the counter.
    s._outcome(_failure({"version": 6, "commit": "mine"}, 57), 6, "mine", [])
    assert (s.revision, s.version) == (57, 6)


def test_watch_events_group_by_revision_and_name_their_writer() -> None:
    s = store()
    counter = {"version": 3, "writer": "w2", "commit": "c"}
    events = [
        {"kv": {"key": b64("/pcloud/node/1"), "mod_revision": "8", "value": b64('{"id":1}')}},
        {"kv": {"key": b64("/pcloud/meta/version"), "mod_revision": "8", "value": b64(json.dumps(counter))}},
        {"type": "DELETE", "kv": {"key": b64("/pcloud/addr/10.0.0.1"), "mod_revision": "9"}},
        {"kv": {"key": b64("/pcloud/_migration"), "mod_revision": "9", "value": b64("{}")}},
    ]  # fmt: skip
    first, second = decode_batches(events, s.version_key, s.split)
    assert (first.revision, first.version, first.writer) == (8, 3, "w2")
    assert [(c.kind, c.key, c.value) for c in first.changes] == [("node", "1", {"id": 1})]
    assert (second.revision, second.version) == (9, None)
    assert [(c.kind, c.key, c.value) for c in second.changes] == [("addr", "10.0.0.1", None)]
    s.advance(first)
    assert s.revision == 41  # never moves backwards
    s.revision = 1
    s.advance(second)  # no counter in it (not a commit): nothing to guard on
    assert s.revision == 1
    s.advance(first)
    assert (s.revision, s.version) == (8, 3)


def test_prefix_end() -> None:
    assert prefix_end("/pcloud/") == b"/pcloud0"
    assert prefix_end(b"a\xff") == b"b"


@pytest.fixture
def tls(tmp_path: Path) -> tuple[TlsFiles, MemberTls]:
    ca = TlsFiles.in_dir(tmp_path)
    ensure_ca(ca, "unit")
    return ca, issue_member_cert(ca.ca_cert, ca.ca_key, "m1", ["10.0.0.1"], tmp_path / "etcd")


def test_member_certificate_is_a_ca_signed_server_and_client_leaf(
    tls: tuple[TlsFiles, MemberTls],
) -> None:
    ca, member = tls
    assert member.key.stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate(member.cert.read_bytes())
    ca_cert = x509.load_pem_x509_certificate(ca.ca_cert.read_bytes())
    cert.verify_directly_issued_by(ca_cert)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.0.0.1"]


def test_argv_listens_on_the_overlay_only_with_our_ports_and_flags(
    tls: tuple[TlsFiles, MemberTls], tmp_path: Path
) -> None:
    spec = MemberSpec("m1", "10.0.0.1", tmp_path / "data", tls[1])
    argv = etcd_argv(spec, {"m1": spec.peer_url, "m2": "https://10.0.0.2:2480"}, "new")
    assert "--listen-client-urls=https://10.0.0.1:2479" in argv
    assert "--listen-peer-urls=https://10.0.0.1:2480" in argv
    assert "--initial-cluster=m1=https://10.0.0.1:2480,m2=https://10.0.0.2:2480" in argv
    for flag in (
        "--pre-vote=true",
        "--auto-compaction-mode=periodic",
        "--auto-compaction-retention=1h",
        "--max-txn-ops=1024",
        "--client-cert-auth=true",
        "--peer-client-cert-auth=true",
        "--initial-cluster-state=new",
    ):
        assert flag in argv
    assert not any("2379" in a or "2380" in a or "127.0.0.1" in a for a in argv)
    v6 = MemberSpec("m1", "fd7a::1", tmp_path / "data", tls[1])
    assert v6.client_url == "https://[fd7a::1]:2479"


def test_force_new_cluster_needs_confirmation(
    tls: tuple[TlsFiles, MemberTls], tmp_path: Path
) -> None:
    spec = MemberSpec("m1", "10.0.0.1", tmp_path / "data", tls[1])
    with pytest.raises(NotConfirmed):
        force_new_cluster_argv(spec, confirm=False)
    argv = force_new_cluster_argv(spec, confirm=True)
    assert (
        "--force-new-cluster=true" in argv and "--initial-cluster=m1=https://10.0.0.1:2480" in argv
    )


def test_retry_retries_transient_errors_only() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise StoreError("etcdserver: unhealthy cluster")
        return "done"

    assert (
        retry(flaky, deadline_s=5, transient=lambda e: "unhealthy" in str(e), first=0.01) == "done"
    )
    assert len(calls) == 3

    def broken() -> None:
        calls.append(1)
        raise StoreError("permission denied")

    with pytest.raises(StoreError, match="permission denied"):
        retry(broken, deadline_s=5, transient=lambda e: "unhealthy" in str(e), first=0.01)
    assert len(calls) == 4


def test_disable_debian_unit(tmp_path: Path) -> None:
    comm = tmp_path / "comm"
    ran: list[list[str]] = []

    def run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        ran.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")

    comm.write_text("bash\n")
    assert "not systemd" in disable_debian_unit(run, comm) and ran == []
    comm.write_text("systemd\n")
    assert disable_debian_unit(run, comm) == "etcd.service disabled and stopped"
    assert ran == [["systemctl", "disable", "--now", "etcd.service"]]


def test_only_acknowledged_commits_are_skipped_by_the_watch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = store()

    def ok(path: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {"header": {"revision": "42"}, "succeeded": True}

    def down(path: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        raise Unavailable("etcd unavailable (no quorum)")

    monkeypatch.setattr(s.gateway, "call", ok)
    s.commit([Put("user", "a", {})], 1)
    assert len(s._mine) == 1  # the watch will skip this one, ours
    monkeypatch.setattr(s.gateway, "call", down)
    with pytest.raises(Unavailable):
        s.commit([Put("user", "b", {})], 2)
    assert len(s._mine) == 1  # outcome unknown: if it lands, the watch must deliver it


async def test_a_commit_cancelled_in_flight_is_not_skipped_by_the_watch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The request that made it went away while the txn was in flight: it may have landed, and
    nothing applied it here, so the watch must deliver it (an HA run lost a node to this)."""
    s = store()

    async def gone(path: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        raise asyncio.CancelledError

    monkeypatch.setattr(s.gateway, "acall", gone)
    with pytest.raises(asyncio.CancelledError):
        await s.acommit([Put("node", "18", {})], 1)
    assert not s._mine


async def _until(condition: Callable[[], bool]) -> None:
    """Let the event loop run until `condition` holds (no clock involved: nothing here waits
    on I/O, so a thousand turns is a generous bound)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def test_a_commit_seen_landing_while_its_call_is_in_flight_waits_for_the_outcome(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The watch saw our commit land before the call came back, then the call failed (a timed
    out answer, a cancelled request): nothing applied it, so the watch must deliver it. Had the
    call succeeded, the watch skips it as ours."""
    import pcloud.server.store.etcd as etcd_module

    s = store()
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[dict[str, Any]] = loop.create_future()

    async def slow(path: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        return await answer

    landed: asyncio.Queue[WatchBatch] = asyncio.Queue()

    async def commits(*_: Any, **__: Any) -> AsyncIterator[WatchBatch]:
        while True:
            yield await landed.get()

    monkeypatch.setattr(s.gateway, "acall", slow)
    monkeypatch.setattr(etcd_module, "watch_commits", commits)
    delivered: list[WatchBatch] = []

    async def watch() -> None:
        async for batch in s.watch(1):
            delivered.append(batch)

    watcher = asyncio.create_task(watch())
    for ok in (False, True):
        call = asyncio.create_task(s.acommit([Put("node", "18", {})], 1))
        await _until(lambda: bool(s._pending))  # the txn is out (the gateway holds it)
        token = next(iter(s._pending))
        landed.put_nowait(WatchBatch(revision=50, version=1, writer=s.writer_id, commit=token))
        await _until(landed.empty)
        for _ in range(20):
            await asyncio.sleep(0)
        assert delivered == []  # neither skipped nor delivered while the call is open
        if ok:
            answer.set_result({"header": {"revision": "50"}, "succeeded": True})
            await call
            await _until(lambda: not s._mine)  # the watch took it for ours
            assert delivered == []
        else:
            answer.set_exception(Unavailable("etcd unavailable (timed out)"))
            with pytest.raises(Unavailable):
                await call
            await _until(lambda: bool(delivered))
            assert [b.commit for b in delivered] == [token]
            delivered.clear()
            answer = loop.create_future()
    watcher.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watcher
    assert not s._pending and not s._mine
