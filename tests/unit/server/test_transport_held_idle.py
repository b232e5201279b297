"""A taken-over connection's small protocol (server/transport/held.py) and the lazily built
stand-ins for uvicorn's per-connection objects (server/transport/idle.py), on real transports."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from pcloud.server.transport.held import hold
from pcloud.server.transport.idle import LazyFlowControl, Pipeline
from pcloud.server.transport.sources import SourceGate


async def transport_pair() -> tuple[asyncio.Transport, socket.socket]:
    mine, theirs = socket.socketpair()
    transport, _ = await asyncio.get_running_loop().connect_accepted_socket(asyncio.Protocol, mine)
    return transport, theirs


class Stream:
    def __init__(self) -> None:
        self.ended = 0
        self.gone = asyncio.Event()

    def end(self) -> None:
        self.ended += 1
        self.gone.set()


async def test_a_held_connection_ends_its_stream_and_gives_its_source_back() -> None:
    transport, peer = await transport_pair()
    gate = SourceGate(1)
    assert gate.admit("192.0.2.1") and not gate.admit("192.0.2.1")
    old = object()
    connections: set[Any] = {old}
    stream = Stream()
    held = hold(old, transport, stream, connections, gate, "192.0.2.1")
    assert connections == {held} and transport.get_protocol() is held
    peer.sendall(b"more bytes are dropped")
    peer.close()
    async with asyncio.timeout(5):
        await stream.gone.wait()
    assert stream.ended == 1 and connections == set()
    assert gate.admit("192.0.2.1")  # the count came back


async def test_shutdown_closes_a_held_connection() -> None:
    transport, peer = await transport_pair()
    held = hold(object(), transport, Stream(), set(), SourceGate(0), None)
    held.shutdown()
    assert transport.is_closing()
    peer.close()


async def test_lazy_flow_control_waits_only_while_paused() -> None:
    transport, peer = await transport_pair()
    flow = LazyFlowControl(transport)
    async with asyncio.timeout(5):
        await flow.drain()  # not paused: at once, and no Event made
        assert flow._writable is None
        flow.pause_writing()
        waiter = asyncio.ensure_future(flow.drain())
        await asyncio.sleep(0)  # (one loop turn: the waiter starts waiting)
        assert not waiter.done() and flow.write_paused
        flow.resume_writing()
        await waiter
    flow.pause_reading()
    assert flow.read_paused and not transport.is_reading()
    flow.resume_reading()
    assert transport.is_reading()
    transport.close()
    peer.close()


def test_pipeline_is_first_in_first_out() -> None:
    pipeline = Pipeline()
    assert not pipeline and len(pipeline) == 0
    for item in ("a", "b", "c"):
        pipeline.appendleft(item)  # as uvicorn queues pipelined requests
    assert len(pipeline) == 3 and [pipeline.pop() for _ in range(3)] == ["a", "b", "c"]
    assert not pipeline
