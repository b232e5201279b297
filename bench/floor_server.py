"""The floor of the fan-out benchmark: a minimal asyncio HTTPS server that writes prepared lines.

    python -m bench.floor_server --port P --cert CERT --key KEY

It holds one chunked `GET` answer per connection (the stream request of bench.fanout_client; the
bearer token is the node id) and does nothing else: no routing, no auth, no state. A `POST
/prepare` on another connection (JSON `{"ids": [...], "lines": {"<id>": "<line>"}}`, or one
`"line"` for all ids) renders each node's HTTP chunk ahead of time; `POST /fire` then writes them,
one `transport.write` per node, and answers when all are written. The time from sending `/fire`
to the clients' last receive is the least any Python server on this machine, with these clients
and TLS, could take to deliver the same answers: the benchmark's fan-out is a ratio to it.
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.sslproto
import json
import ssl
import sys

from pcloud.server.transport.lean_tls import install as install_lean_tls

HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n"
)


def chunk(line: bytes) -> bytes:
    """One line of the stream as an HTTP chunk (as uvicorn frames the real server's lines)."""
    data = line + b"\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


class Floor:
    def __init__(self) -> None:
        self.streams: dict[int, asyncio.StreamWriter] = {}
        self.prepared: list[tuple[asyncio.StreamWriter, bytes]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                method, target = head.split(b" ", 2)[:2]
                headers = {}
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower()] = value.strip()
                if method == b"GET":
                    node = int(headers[b"authorization"].split()[-1])
                    self.streams[node] = writer
                    writer.write(HEAD)
                    continue  # the stream stays open; nothing more comes on it
                body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
                if target == b"/prepare":
                    self.prepare(json.loads(body))
                elif target == b"/fire":
                    for w, data in self.prepared:
                        w.write(data)
                    self.prepared = []
                answer = b'{"held":%d}' % len(self.streams)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(answer), answer)
                )
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, ValueError):
            writer.close()

    def prepare(self, doc: dict[str, object]) -> None:
        ids = doc["ids"]
        lines = doc.get("lines") or {}
        common = str(doc.get("line", "")).encode()
        assert isinstance(ids, list) and isinstance(lines, dict)
        self.prepared = [
            (self.streams[i], chunk(str(lines[str(i)]).encode() if str(i) in lines else common))
            for i in ids
            if i in self.streams
        ]


async def serve(port: int, cert: str, key: str) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    floor = Floor()
    server = await asyncio.start_server(floor.handle, "127.0.0.1", port, ssl=ctx, backlog=4096)
    print("floor ready", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.floor_server", description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    a = p.parse_args(argv)
    # As the real server does (server/serve.tune_runtime): a 1 KiB TLS read buffer, one per
    # thread, and asyncio's TLS protocol with its smaller per-connection dict.
    if not install_lean_tls(1024):
        asyncio.sslproto.SSLProtocol.max_size = 1024
    try:
        asyncio.run(serve(a.port, a.cert, a.key))
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
