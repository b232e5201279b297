"""The fan-out benchmark's simulated nodes on netmap streams (bench.fanout_client's workers).

A node sends `GET /api/v1/netmap/stream` on its own TLS connection and reads the chunked answer
line by line, as a backend does: keep-alive lines are dropped, every netmap is recorded through
`Worker.record` (the same windows as the long poll's answers). When the stream ends it is
reopened from the version held.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .fanout_client import Conn, SimNode, Worker

# Errors that mean the connection is gone (e.g. the server closed an idle keep-alive one).
CONN_ERRORS = (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError)


class HttpError(Exception):
    pass


async def stream_loop(worker: Worker, node: SimNode, conn: Conn, token: str, path: str) -> None:
    """Hold this node's netmap stream on `conn`; reopen it, from the version held, when it
    ends. Keep-alive lines are read and dropped, as a backend does."""
    while True:
        worker.outstanding += 1
        try:
            await stream_once(worker, node, conn, token, path)
        except (*CONN_ERRORS, HttpError, ValueError) as exc:
            worker.note_error(f"{node.spec.hostname}: stream: {type(exc).__name__}: {exc}")
            conn.close()
            await asyncio.sleep(1)  # bounded retry rate; the errors are reported
        finally:
            worker.outstanding -= 1


async def stream_once(worker: Worker, node: SimNode, conn: Conn, token: str, path: str) -> None:
    for attempt in range(2):
        reused = conn.writer is not None
        if not reused:
            async with worker.opening:
                await conn.open()
        assert conn.reader is not None and conn.writer is not None
        target = f"{path}?since={node.version}" if node.version else path
        conn.writer.write(
            b"GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n"
            % (target.encode(), conn.host_header, token.encode())
        )
        try:
            head = await conn.reader.readuntil(b"\r\n\r\n")
            break
        except CONN_ERRORS:
            # The server closed the keep-alive connection while it sat idle after the
            # registration (75 s): once more on a new one, as Conn.request does.
            conn.close()
            if not reused or attempt:
                raise
    else:
        raise HttpError("unreachable")
    status = int(head.split(b" ", 2)[1])
    if status != 200:
        raise HttpError(f"stream answered {status}: {head[:200]!r}")
    pending = b""
    while True:
        line = await conn.reader.readuntil(b"\r\n")
        n = int(line.split(b";", 1)[0], 16)
        data = await conn.reader.readexactly(n + 2)
        if n == 0:
            return  # the server ended the stream: reopen
        received = time.monotonic()
        pending += data[:-2]
        while (end := pending.find(b"\n")) >= 0:
            text, pending = pending[:end], pending[end + 1 :]
            if text.startswith(b'{"keep_alive"'):
                continue
            worker.record(node, json.loads(text), len(line) + len(data), received)
