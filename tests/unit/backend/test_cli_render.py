"""`pcloud status` rendering: activity strings, units, ages, the table, state lines."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from rich.console import Console

from pcloud.backend.cli.render import (
    activity,
    peers_table,
    state_line,
    status_table,
)
from pcloud.backend.localapi.schemas import PeerStatus, Status
from pcloud.server.protocol import Peer

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
KEY = "B" * 43 + "="


def peer(name: str, addr: str, **kw: object) -> PeerStatus:
    data: dict[str, object] = dict(
        node_id=2,
        hostname=name,
        user="alice",
        role="server",
        tags=[],
        public_key=KEY,
        address=addr,
        endpoints=[],
        online=True,
        last_seen=None,
    )
    data.update(kw)
    return PeerStatus.model_validate(data)


def test_activity() -> None:
    active = peer(
        "a",
        "10.0.0.2",
        endpoint="192.168.0.12:51820",
        last_handshake=NOW - timedelta(seconds=30),
        tx_bytes=2048,
        rx_bytes=1_500_000,
    )
    assert activity(active, NOW) == "active; direct 192.168.0.12:51820, tx 2.0 KiB rx 1.4 MiB"
    assert activity(peer("b", "10.0.0.3"), NOW) == "idle"
    stale = peer("b", "10.0.0.3", last_handshake=NOW - timedelta(minutes=10))
    assert activity(stale, NOW) == "idle"
    off = peer("c", "10.0.0.4", online=False, last_seen=NOW - timedelta(minutes=5))
    assert activity(off, NOW) == "offline, last seen 5m ago"
    assert activity(peer("d", "10.0.0.5", online=False), NOW) == "offline"


def render(status: Status, **kw: bool) -> str:
    out = io.StringIO()
    Console(file=out, width=200, highlight=False).print(status_table(status, NOW, **kw))
    return out.getvalue()


def test_table_lists_self_then_peers_by_name() -> None:
    me = Peer(
        node_id=1,
        hostname="laptop",
        user="bob",
        role="client",
        tags=[],
        public_key=KEY,
        address="10.0.0.9",
        endpoints=[],
        online=True,
        last_seen=None,
    )
    status = Status(
        state="Running",
        self=me,
        server_url="https://x/",
        peers=[peer("rpi112", "10.0.0.3"), peer("rpi111", "10.0.0.2", online=False)],
    )
    lines = [line.split() for line in render(status).splitlines()]
    assert lines[0] == ["10.0.0.9", "laptop", "bob", "client", "-"]
    assert lines[1][:5] == ["10.0.0.2", "rpi111", "alice", "server", "offline"]
    assert lines[2] == ["10.0.0.3", "rpi112", "alice", "server", "idle"]
    assert "laptop" not in render(status, with_self=False)


def test_peers_table_has_hostname_ip_online_handshake_endpoint() -> None:
    status = Status(
        state="Running",
        peers=[
            peer(
                "rpi112",
                "10.0.0.3",
                endpoint="192.168.0.12:51820",
                last_handshake=NOW - timedelta(seconds=7),
            ),
            peer("rpi111", "10.0.0.2", online=False),
        ],
    )
    out = io.StringIO()
    Console(file=out, width=200, highlight=False).print(peers_table(status, NOW))
    lines = [line.split() for line in out.getvalue().splitlines()]
    assert lines == [
        ["HOSTNAME", "IP", "ONLINE", "LAST-HANDSHAKE", "ENDPOINT"],
        ["rpi111", "10.0.0.2", "no", "never", "-"],
        ["rpi112", "10.0.0.3", "yes", "7s", "ago", "192.168.0.12:51820"],
    ]


def test_state_lines() -> None:
    assert state_line(Status(state="Running")) is None
    assert "pcloud up" in (state_line(Status(state="Stopped")) or "")
    assert "pcloud login" in (state_line(Status(state="NeedsLogin")) or "")
    assert state_line(Status(state="Error", error="boom")) == "# Error: boom"
    assert state_line(Status(state="Running", error="server unreachable")) == (
        "# Warning: server unreachable"
    )


def test_table_shows_dns_names() -> None:
    me = Peer(
        node_id=1,
        hostname="laptop",
        user="bob",
        role="client",
        tags=[],
        public_key=KEY,
        address="10.0.0.9",
        endpoints=[],
        online=True,
        last_seen=None,
        dns_name="laptop.pcloud.internal",
    )
    status = Status(
        state="Running",
        self=me,
        server_url="https://x/",
        peers=[peer("rpi112", "10.0.0.3", dns_name="rpi112.pcloud.internal")],
    )
    lines = [line.split() for line in render(status).splitlines()]
    assert lines[0][:2] == ["10.0.0.9", "laptop.pcloud.internal"]
    assert lines[1][:2] == ["10.0.0.3", "rpi112.pcloud.internal"]


def test_unreachable_server_is_a_distinct_connected_state() -> None:
    since = NOW - timedelta(seconds=35)
    st = Status(
        state="Running",
        error="coordination server unreachable: no answer",
        control_unreachable_since=since,
    )
    assert st.unreachable_note(NOW) == (
        "Connected, coordination server unreachable since 11:59:25 UTC (35 s ago)"
    )
    line = state_line(st) or ""
    assert line.startswith("# Connected, coordination server unreachable since 11:59:25 UTC")
    assert "tunnels keep working" in line and "no answer" in line
    # Not Running (down, logged out): no such note, whatever is left in the field.
    assert Status(state="Stopped", control_unreachable_since=since).unreachable_note(NOW) is None


def test_a_failed_job_says_resume_unless_the_step_names_another_place() -> None:
    """`pcloud ha enable` on a client said "run it on the first server; run it again to resume"."""
    from pcloud.backend.cli.follow import failure
    from pcloud.backend.localapi.schemas import Job

    def job(detail: str) -> Job:
        return Job(
            id="j",
            kind="ha",
            state="failed",
            steps=[{"name": "servers online", "state": "failed", "detail": detail}],
        )

    elsewhere = failure("ha enable", job("run `pcloud ha enable` on the first server"))
    assert str(elsewhere) == (
        "ha enable failed at step 'servers online': run `pcloud ha enable` on the first server"
    )
    here = failure("ha enable", job("etcd did not start"))
    assert str(here).endswith("; run `pcloud ha enable` again to resume")
