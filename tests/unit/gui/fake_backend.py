"""A stand-in for the backend's local API on a real Unix socket, run on the test's qasync loop.

It speaks just enough HTTP/1.1 for httpx: JSON answers (optionally held back for a while, to prove
the UI keeps running), and a `/v1/events` stream the test feeds with `push_status`/`push_job`.
Every request is recorded as (method, path, json body).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

Answer = tuple[int, Any]
Handler = Callable[[dict[str, Any] | None], Answer]


def error(status: int, code: str, message: str) -> Answer:
    return status, {"error": {"code": code, "message": message}}


class FakeBackend:
    def __init__(self, path: Path, status: dict[str, Any]) -> None:
        self.path = path
        self.status = status
        self.requests: list[tuple[str, str, Any]] = []
        self.routes: dict[tuple[str, str], Handler] = {}
        self.delays: dict[str, float] = {}
        self._streams: list[asyncio.Queue[str | None]] = []
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # -- control from tests ------------------------------------------------------------------

    def route(self, method: str, path: str, handler: Handler | Answer) -> None:
        self.routes[(method, path)] = handler if callable(handler) else (lambda _b, a=handler: a)

    def push_status(self, status: dict[str, Any]) -> None:
        self.status = status
        self._push(f"event: status\ndata: {json.dumps(status)}\n\n")

    def push_job(self, job: dict[str, Any]) -> None:
        self._push(f"event: job\ndata: {json.dumps(job)}\n\n")

    def _push(self, chunk: str) -> None:
        for queue in self._streams:
            queue.put_nowait(chunk)

    @property
    def subscribers(self) -> int:
        return len(self._streams)

    def calls(self, method: str, path: str) -> list[Any]:
        return [body for m, p, body in self.requests if (m, p) == (method, path)]

    # -- server ------------------------------------------------------------------------------

    async def start(self) -> FakeBackend:
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        return self

    async def stop(self) -> None:
        for queue in self._streams:
            queue.put_nowait(None)
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None
        self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {
                k.strip().lower(): v.strip()
                for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)
            }
            raw = await reader.readexactly(int(headers.get("content-length", "0")))
            body = json.loads(raw) if raw else None
            self.requests.append((method, path, body))
            if path == "/v1/events":
                await self._stream(writer)
                return
            if path in self.delays:
                await asyncio.sleep(self.delays[path])
            status, answer = self._answer(method, path, body)
            payload = json.dumps(answer).encode()
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _answer(self, method: str, path: str, body: Any) -> Answer:
        handler = self.routes.get((method, path))
        if handler is not None:
            return handler(body)
        if (method, path) == ("GET", "/v1/status"):
            return 200, self.status
        return error(404, "not_found", f"no route {method} {path}")

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
        )
        writer.write(f"event: status\ndata: {json.dumps(self.status)}\n\n".encode())
        await writer.drain()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._streams.append(queue)
        try:
            while (chunk := await queue.get()) is not None:
                writer.write(chunk.encode())
                await writer.drain()
        finally:
            self._streams.remove(queue)
