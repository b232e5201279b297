"""How fast a UDP relay link notices its relay is gone (real UDP sockets on loopback, a small
relay stand-in that welcomes every hello): two unanswered hellos, or an ICMP port unreachable,
take the link down; a welcome brings it back. Periods are shortened so the test takes ~1 s."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from pcloud.backend.keys import PrivateKey
from pcloud.backend.relay import link as relay_link
from pcloud.backend.relay.link import UdpLink
from pcloud.server.protocol import RelayInfo
from pcloud.server.protocol import relay as wire
from tests.lab import async_wait_for


class Relay(asyncio.DatagramProtocol):
    """Welcomes hellos while `answering`."""

    def __init__(self) -> None:
        self.answering = True
        self.hellos = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data[0] == wire.HELLO:
            self.hellos += 1
            if self.answering and self.transport is not None:
                self.transport.sendto(wire.welcome("r1"), addr)


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "HELLO_S", 0.4)
    monkeypatch.setattr(relay_link, "ANSWER_S", 0.1)


async def start(relay: Relay) -> tuple[asyncio.DatagramTransport, UdpLink, asyncio.Task[None]]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: relay, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    key = PrivateKey.generate()
    info = RelayInfo(name="r1", udp_port=port, public_key=key.public_key(), time=int(time.time()))
    link = UdpLink(info, "127.0.0.1", PrivateKey.generate(), lambda _l, _k, _p: None)
    task = asyncio.create_task(link.run())
    await async_wait_for(lambda: link.up, timeout=5, what="the first welcome")
    return transport, link, task


async def test_unanswered_hellos_take_the_link_down_and_a_welcome_back(fast: None) -> None:
    relay = Relay()
    transport, link, task = await start(relay)
    try:
        relay.answering = False
        silent = time.monotonic()
        await async_wait_for(lambda: not link.up, timeout=5, what="the link to go down")
        # At most one hello period plus MISSES_DOWN answer windows (and some scheduling).
        assert time.monotonic() - silent < wire.HELLO_S + 2 * relay_link.ANSWER_S + 0.5
        assert relay.hellos >= 3  # the unanswered one was sent again at once
        relay.answering = True
        await async_wait_for(lambda: link.up, timeout=5, what="the link to come back")
    finally:
        task.cancel()
        transport.close()


async def test_port_unreachable_takes_the_link_down_at_once(
    fast: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "pcloud.backend.relay.link")
    relay = Relay()
    transport, link, task = await start(relay)
    try:
        transport.close()  # the relay's process is gone: the kernel answers port unreachable
        link.send(b"k" * wire.KEY_LEN, b"packet")
        await async_wait_for(lambda: not link.up, timeout=1.0, what="down on ICMP")
        assert "refused, down" in caplog.text  # the refusal did it, not unanswered hellos
    finally:
        task.cancel()


async def test_traffic_finds_a_dead_relay_before_the_hello_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wire, "HELLO_S", 3.0)
    monkeypatch.setattr(relay_link, "ANSWER_S", 0.1)
    monkeypatch.setattr(relay_link, "EAGER_S", 0.2)
    relay = Relay()
    transport, link, task = await start(relay)

    async def traffic() -> None:
        while True:
            link.send(b"k" * wire.KEY_LEN, b"packet")
            await asyncio.sleep(0.05)  # a packet rate, not synchronisation

    sender = asyncio.create_task(traffic())
    try:
        relay.answering = False
        silent = time.monotonic()
        await async_wait_for(lambda: not link.up, timeout=3.0, what="the link to go down")
        # Hellos went early (EAGER_S) because of the traffic, not a HELLO_S later.
        assert time.monotonic() - silent < 0.2 + 2 * 0.1 + 0.5
    finally:
        sender.cancel()
        task.cancel()
        transport.close()
