"""The protocol of a connection whose request the lean door took over (a held netmap stream).

Once `GuardedProtocol._take_over` hands a request to the door (api/stream_direct.py), the
connection serves nothing else: the stream writes to the transport and only needs to hear of
the connection's loss. uvicorn's protocol object (~30 attributes in a dict of its own, the
server's and client's addresses, its limits' state) was kept for nothing but that, ~2 KB a held
stream. `hold` puts this slotted object in its place, on the transport and in uvicorn's set of
connections (whose `shutdown` the server calls on every connection when it stops); the old
protocol is then garbage.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from .sources import SourceGate


class Ending(Protocol):
    def end(self) -> None: ...


class HeldConnection(asyncio.Protocol):
    """A taken-over connection: drops what the client still sends, ends the stream when the
    connection goes, closes it when the server stops."""

    __slots__ = ("transport", "stream", "connections", "gate", "source")

    def __init__(
        self,
        transport: asyncio.Transport,
        stream: Ending,
        connections: set[Any],
        gate: SourceGate,
        source: str | None,
    ) -> None:
        self.transport = transport
        self.stream = stream
        self.connections = connections
        self.gate = gate
        self.source = source  # counted against the source until the connection ends

    def data_received(self, data: bytes) -> None:
        pass  # (a taken-over request reads nothing more: what comes is dropped)

    def eof_received(self) -> None:
        pass  # the stream goes on until the connection is lost

    # The stream watches the transport's buffer itself (stream_direct.MAX_BUFFERED).
    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        source, self.source = self.source, None
        try:
            self.stream.end()
        finally:
            if source is not None:
                self.gate.release(source)

    def shutdown(self) -> None:
        """uvicorn's `Server.shutdown` asks every connection to close."""
        self.transport.close()


def hold(
    old: Any,
    transport: asyncio.Transport,
    stream: Ending,
    connections: set[Any],
    gate: SourceGate,
    source: str | None,
) -> HeldConnection:
    """Put a `HeldConnection` in `old`'s place on `transport` and in `connections`."""
    held = HeldConnection(transport, stream, connections, gate, source)
    connections.discard(old)
    connections.add(held)
    transport.set_protocol(held)
    return held
