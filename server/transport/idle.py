"""Less memory per idle keep-alive connection: uvicorn's protocol keeping less between requests.

Every connection (a node between its requests, 10,000 of them before their streams start) keeps,
in uvicorn's protocol:

- the last request's cycle and scope (FastAPI's exit stack, an Event) until the next request,
  ~5 KB, freed late as heap holes: dropped here once the answer is complete;
- its HTTP parser (~0.9 KB): dropped between requests too, and made again by the next read;
- its flow control and its queue of pipelined requests, each with an empty `collections.deque`
  (~760 bytes even when empty: its first block of 64 slots), the flow control's inside an
  `asyncio.Event` that only a paused writer waits on: stand-ins that allocate only when used.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class LazyFlowControl(FlowControl):
    """uvicorn's FlowControl whose writable event exists only while writing is paused."""

    def __init__(self, transport: asyncio.Transport) -> None:  # (not the base's: no Event)
        self._transport = transport
        self.read_paused = False
        self.write_paused = False
        self._writable: asyncio.Event | None = None

    async def drain(self) -> None:
        if self.write_paused:
            if self._writable is None:
                self._writable = asyncio.Event()
            await self._writable.wait()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        if self.write_paused:
            self.write_paused = False
            writable, self._writable = self._writable, None
            if writable is not None:
                writable.set()


class Pipeline:
    """uvicorn's queue of pipelined requests (it only uses `appendleft`, `pop` and truth)."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: list[Any] | None = None

    def appendleft(self, item: Any) -> None:
        if self._items is None:
            self._items = []
        self._items.insert(0, item)

    def pop(self) -> Any:
        if not self._items:
            raise IndexError("pop from an empty pipeline")
        return self._items.pop()

    def __len__(self) -> int:
        return len(self._items) if self._items else 0


class LeanIdle(HttpToolsProtocol):
    """uvicorn's httptools protocol with the stand-ins above; see the module doc."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipeline = Pipeline()  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = LazyFlowControl(transport)

    def data_received(self, data: bytes) -> None:
        if self.parser is None:  # (dropped between requests)
            self.parser = httptools.HttpRequestParser(self)
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)  # as uvicorn
        super().data_received(data)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Not a pipelined request's cycle; a late body is then dropped (`GuardedProtocol.on_body`),
        # as uvicorn would drop it.
        cycle = self.cycle
        if cycle is not None and cycle.response_complete:
            self.cycle = None  # type: ignore[assignment]
            if self.scope is cycle.scope:  # (no next head begun)
                self.scope = None  # type: ignore[assignment]
                self.headers = []
                if not cycle.more_body and not self.pipeline and not self.transport.is_closing():
                    # Its request was read to the end and nothing of the next one yet: the
                    # parser holds no state, the next read makes a new one.
                    self.parser = None  # type: ignore[assignment]
