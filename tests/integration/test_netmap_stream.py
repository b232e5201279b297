"""The netmap stream against a real server process (ASGITransport buffers whole responses, so
the in-process tier cannot stream): first message, deltas, keep-alives, the per-node cap, bad
input, and the backend's follower across a hung server and a restart."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from pcloud.backend.control.client import ControlClient, ControlError
from pcloud.backend.control.poller import ServerList
from pcloud.backend.control.stream import StreamPoller
from pcloud.server.protocol import Netmap
from tests.integration.test_server_api import register
from tests.support.coord import CoordServer

KEEPALIVE_S = 0.3
HEAD_TIMEOUT_S = 2.0  # short, so the stream test shows a held stream outlives it
PATH = "/api/v1/netmap/stream"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CoordServer]:
    state_dir = Path(tmp_path_factory.mktemp("stream")) / "server"
    coord = CoordServer(
        state_dir,
        extra_args=["--stream-keepalive", str(KEEPALIVE_S), "--head-timeout", str(HEAD_TIMEOUT_S)],
    ).start()
    try:
        yield coord
    finally:
        coord.stop()


@pytest.fixture(scope="module")
def admin(server: CoordServer) -> str:
    return server.setup_admin()


@asynccontextmanager
async def open_stream(
    server: CoordServer, token: str, **params: Any
) -> AsyncIterator[tuple[httpx.Response, AsyncIterator[str]]]:
    async with (
        server.async_client(token) as c,
        c.stream("GET", PATH, params=params) as answer,
    ):
        yield answer, answer.aiter_lines()


async def next_json(lines: AsyncIterator[str], within: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(within):
        return dict(json.loads(await anext(lines)))


async def next_netmap(lines: AsyncIterator[str], within: float = 5.0) -> dict[str, Any]:
    """The next line that is not a keep-alive."""
    async with asyncio.timeout(within):
        while True:
            message = await next_json(lines, within)
            if "keep_alive" not in message:
                return message


def hostnames(peers: list[dict[str, Any]]) -> set[str]:
    return {p["hostname"] for p in peers}


async def test_stream_sends_full_map_then_deltas_and_keepalives(
    server: CoordServer, admin: str
) -> None:
    a = register(server, admin, "st-a")
    b = register(server, admin, "st-b")
    async with open_stream(server, a["node_token"]) as (answer, lines):
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/x-ndjson"
        assert "server" not in answer.headers  # the lean door, not uvicorn, answered
        assert float(answer.headers["x-pcloud-keep-alive"]) == KEEPALIVE_S
        first = await next_json(lines)
        assert first["full"] is True and "st-b" in hostnames(first["peers"])
        # Keep-alives go on past the connection's head deadline (the request is being served).
        held_until = time.monotonic() + HEAD_TIMEOUT_S + 1
        while time.monotonic() < held_until:
            assert await next_json(lines, within=KEEPALIVE_S * 5)
        with server.client(b["node_token"]) as c:
            c.put("/api/v1/nodes/self/endpoints", json={"endpoints": ["192.0.2.7:4000"]})
        delta = await next_netmap(lines)
        assert delta["full"] is False and delta["version"] > first["version"]
        changed = {p["hostname"]: p for p in delta["peers_changed"]}
        assert "192.0.2.7:4000" in changed["st-b"]["endpoints"]
        with server.client(admin) as c:
            assert c.delete(f"/api/v1/nodes/{b['node_id']}").status_code in (200, 204)
        removal = await next_netmap(lines)
        assert b["node_id"] in removal["peers_removed"]
    # Resuming from the version held: a delta from there, not a full map.
    async with open_stream(server, a["node_token"], since=removal["version"]) as (_, lines):
        resumed = await next_json(lines)
        assert resumed["full"] is False and resumed["peers_changed"] == []
        assert resumed["version"] == removal["version"]


async def test_stream_over_asgi_when_the_lean_door_declines(
    server: CoordServer, admin: str
) -> None:
    # An extra query parameter: the protocol's door (api.stream_direct) leaves it to the FastAPI
    # route, which streams the same lines through ASGI (and ends the same way).
    a = register(server, admin, "st-asgi")
    async with open_stream(server, a["node_token"], extra="1") as (answer, lines):
        assert answer.headers["server"] == "uvicorn"  # written by uvicorn, not by the door
        assert (await next_json(lines))["full"] is True
        async with asyncio.timeout(5):
            while await next_json(lines) != {"keep_alive": True}:
                pass  # presence news of other tests' nodes may come first
        with server.client(admin) as c:
            c.delete(f"/api/v1/nodes/{a['node_id']}")
        async with asyncio.timeout(5):
            rest = [line async for line in lines]
        assert all(json.loads(x) for x in rest if x)


async def test_stream_refuses_bad_input(server: CoordServer, admin: str) -> None:
    a = register(server, admin, "st-bad")
    async with server.async_client(a["node_token"]) as c:
        bad_since = await c.get(PATH, params={"since": "-1"})
        assert bad_since.status_code == 422 and "since" in bad_since.json()["error"]["message"]
        huge = await c.get(PATH, params={"since": "9" * 40})
        assert huge.status_code == 422
    async with server.async_client("pcn_" + "x" * 40) as c:
        unknown = await c.get(PATH)
        assert unknown.status_code == 401
        assert unknown.json()["error"]["code"] == "unauthorized"


async def test_a_node_holds_at_most_its_cap_of_streams(server: CoordServer, admin: str) -> None:
    a = register(server, admin, "st-cap")  # the server's cap: 2 (--max-polls-per-node)
    async with open_stream(server, a["node_token"]) as (_, first):
        await next_json(first)
        async with open_stream(server, a["node_token"]) as (_, second):
            await next_json(second)
            async with open_stream(server, a["node_token"]) as (_, third):
                await next_json(third)
                # The oldest stream ends (cleanly); the two newer ones go on.
                async with asyncio.timeout(5):
                    rest = [line async for line in first]
                assert all(json.loads(x) for x in rest if x)
                # ...while the newer two still get lines (keep-alives, or presence news).
                assert await next_json(second, KEEPALIVE_S * 5)
                assert await next_json(third, KEEPALIVE_S * 5)


async def test_removed_node_stream_ends(server: CoordServer, admin: str) -> None:
    a = register(server, admin, "st-gone")
    async with open_stream(server, a["node_token"]) as (_, lines):
        await next_json(lines)
        with server.client(admin) as c:
            c.delete(f"/api/v1/nodes/{a['node_id']}")
        async with asyncio.timeout(5):  # the stream ends (the timeout would fail the test)
            rest = [line async for line in lines]
        assert all(a["node_id"] not in json.loads(x).get("peers_removed", []) for x in rest if x)


async def _until(cond: Any, what: str, within: float) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > within:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)  # polling a condition with a deadline
    return time.monotonic() - start


async def test_follower_sees_a_hung_server_and_reconnects_after_restart(
    server: CoordServer, admin: str
) -> None:
    a = register(server, admin, "st-follow")
    netmaps: list[Netmap] = []
    reach: list[str | None] = []
    fatal: list[ControlError] = []

    async def on_netmap(nm: Netmap) -> None:
        netmaps.append(nm)

    async def on_fatal(e: ControlError) -> None:
        fatal.append(e)

    client = ControlClient(server.ssl_context())
    poller = StreamPoller(
        client, ServerList(server.url), a["node_token"], since=None,
        on_netmap=on_netmap, on_fatal=on_fatal, on_reachable=reach.append,
    )  # fmt: skip
    task = asyncio.create_task(poller.run())
    assert server.proc is not None
    try:
        await _until(lambda: poller.streaming and netmaps, "the stream to open", 10)
        assert netmaps[0].full
        # A hung server (stopped, its sockets open): only the missing keep-alives tell.
        reach.clear()
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            took = await _until(lambda: any(reach), "the follower to notice the silence", 10)
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        print(f"hung server noticed after {took:.2f} s (keep-alive {KEEPALIVE_S} s)")
        assert took < KEEPALIVE_S * 2 + 1 + 1.0, took
        await _until(lambda: poller.streaming and reach[-1] is None, "the stream back", 10)
        # A restart: back on the stream within 2 s of the server answering again.
        count = len(netmaps)
        await asyncio.to_thread(server.restart)
        took = await _until(lambda: poller.streaming and len(netmaps) > count, "reconnect", 10)
        print(f"stream back {took:.2f} s after the restarted server answered /health")
        assert took < 2.0, f"reconnected {took:.2f} s after the server was back"
        assert netmaps[-1].full  # a new process vouches for no old version
        assert not fatal and not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()


async def test_follower_falls_back_to_the_long_poll_on_404(
    server: CoordServer, admin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server without the stream, as an older pcloud-server: the real server's 404 for a path
    # it does not serve (the follower asks for that path instead of the stream's).
    import pcloud.backend.control.stream as follower

    monkeypatch.setattr(follower, "STREAM_PATH", "/netmap/no-such-stream")
    a = register(server, admin, "st-old")
    b = register(server, admin, "st-old-peer")
    netmaps: list[Netmap] = []

    async def on_netmap(nm: Netmap) -> None:
        netmaps.append(nm)

    async def on_fatal(e: ControlError) -> None:
        raise AssertionError(f"fatal: {e}")

    client = ControlClient(server.ssl_context())
    poller = StreamPoller(
        client, ServerList(server.url), a["node_token"], since=None,
        on_netmap=on_netmap, on_fatal=on_fatal, on_reachable=lambda _: None, poll_timeout=5,
    )  # fmt: skip
    task = asyncio.create_task(poller.run())
    try:
        await _until(lambda: netmaps, "a netmap from the long poll", 10)
        assert netmaps[0].full and not poller.streaming
        with server.client(b["node_token"]) as c:
            c.put("/api/v1/nodes/self/endpoints", json={"endpoints": ["192.0.2.8:4100"]})

        def moved() -> bool:
            return any(
                p.hostname == "st-old-peer" and "192.0.2.8:4100" in p.endpoints
                for nm in netmaps[1:]
                for p in nm.peers_changed
            )

        await _until(moved, "the change through the long poll", 10)
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()
