"""Small traffic tools run inside lab hosts: listeners and probes for the packet-filter tests.

`python -m tests.lab.probes listen TCP_PORTS UDP_PORTS [ADDRESS]`: TCP echo on each TCP port,
UDP echo on each UDP port, on ADDRESS (default all addresses), until killed; prints `listening`
once every socket is bound. Pass the host's overlay address when the backend runs: its resolver
holds port 53 on a loopback address (backend/dns), and a wildcard bind of port 53 beside a bound
address is refused by Linux (EADDRINUSE).

`python -m tests.lab.probes probe JSON`: JSON is a list of `[ip, kind, port]` (kind `tcp`,
`udp` or `ping`); every probe runs at once (asyncio), each with a short deadline, and the
answers (true = it got through) print as one JSON list in the same order. A dropped packet is a
timeout; everything that is let through answers within milliseconds on the lab's links.

`python -m tests.lab.probes watch IP CUT_PORT OPEN_PORT`: holds a TCP connection to CUT_PORT and
checks it with one echoed byte every 20 ms, while trying OPEN_PORT every 20 ms; prints
`connected` first, then `cut T` / `open T` (time.monotonic(), shared by every namespace) at the
first echo that does not come back and at the first connection that succeeds.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time

TIMEOUT_S = 0.8
STEP_S = 0.02


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def listen(tcp: list[int], udp: list[int], address: str = "0.0.0.0") -> None:
    loop = asyncio.get_running_loop()
    for port in tcp:
        await asyncio.start_server(_echo, address, port, reuse_address=True)
    for port in udp:
        await loop.create_datagram_endpoint(_Echo, local_addr=(address, port))
    print("listening", flush=True)
    await asyncio.Event().wait()


async def _tcp(ip: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), TIMEOUT_S)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def _udp(ip: str, port: int) -> bool:
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bool] = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            if not got.done():
                got.set_result(data == b"probe")

        def error_received(self, exc: Exception) -> None:
            if not got.done():
                got.set_result(False)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=(ip, port))
    try:
        transport.sendto(b"probe")
        return await asyncio.wait_for(got, TIMEOUT_S)
    except TimeoutError:
        return False
    finally:
        transport.close()


async def _ping(ip: str) -> bool:
    proc = await asyncio.create_subprocess_exec(
        "ping",
        "-n",
        "-c1",
        "-W1",
        ip,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await proc.wait() == 0


async def probe(items: list[tuple[str, str, int]]) -> list[bool]:
    jobs = []
    for ip, kind, port in items:
        if kind == "tcp":
            jobs.append(_tcp(ip, port))
        elif kind == "udp":
            jobs.append(_udp(ip, port))
        else:
            jobs.append(_ping(ip))
    return list(await asyncio.gather(*jobs))


async def watch(ip: str, cut_port: int, open_port: int) -> None:
    reader, writer = await asyncio.open_connection(ip, cut_port)
    writer.write(b"x")
    await writer.drain()
    assert await asyncio.wait_for(reader.readexactly(1), 5) == b"x"
    print("connected", flush=True)

    async def until_cut() -> None:
        while True:
            sent = time.monotonic()
            writer.write(b"x")
            await writer.drain()
            try:
                await asyncio.wait_for(reader.readexactly(1), 0.3)
            except (TimeoutError, OSError, asyncio.IncompleteReadError):
                print(f"cut {sent:.3f}", flush=True)
                return
            await asyncio.sleep(STEP_S)

    async def until_open() -> None:
        while True:
            tried = time.monotonic()
            if await _tcp_quick(ip, open_port):
                print(f"open {tried:.3f}", flush=True)
                return
            await asyncio.sleep(STEP_S)

    await asyncio.gather(until_cut(), until_open())


async def _tcp_quick(ip: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), 0.1)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


def main(argv: list[str]) -> None:
    if argv[0] == "listen":
        ports = [[int(p) for p in a.split(",") if p] for a in argv[1:3]]
        asyncio.run(listen(ports[0], ports[1], *argv[3:4]))
    elif argv[0] == "probe":
        items = [(ip, kind, int(port)) for ip, kind, port in json.loads(argv[1])]
        print(json.dumps(asyncio.run(probe(items))))
    elif argv[0] == "watch":
        asyncio.run(watch(argv[1], int(argv[2]), int(argv[3])))
    else:
        raise SystemExit(f"unknown command {argv[0]!r}")


if __name__ == "__main__":
    socket.setdefaulttimeout(5)
    main(sys.argv[1:])
