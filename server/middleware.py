"""Pure ASGI middleware: a request body size limit and request metrics.

Pure ASGI (not BaseHTTPMiddleware) because thousands of long polls pass through it: it must not
buffer or add a task per request.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import Metrics


class _TooLarge(Exception):
    pass


def _error(status: int, code: str, message: str) -> tuple[dict[str, Any], dict[str, Any]]:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class LimitAndMeasure:
    def __init__(self, app: ASGIApp, *, max_body: int, metrics: Metrics) -> None:
        self.app = app
        self.max_body = max_body
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                await self._reject(send)
                return
        seen = 0
        status = 500
        started = time.perf_counter()

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise _TooLarge
            return message

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, limited_receive, send_status)
        except _TooLarge:
            status = 413
            await self._reject(send)
        route = scope.get("route")
        path = getattr(route, "path", "unmatched")
        self.metrics.requests.labels(path, str(status)).inc()
        if not path.startswith("/api/v1/netmap"):  # held requests: their time is not latency
            self.metrics.latency.labels(path).observe(time.perf_counter() - started)

    async def _reject(self, send: Send) -> None:
        start, body = _error(
            413, "body_too_large", f"request body is larger than {self.max_body} bytes"
        )
        await send(start)
        await send(body)
