"""backend/nat: the NAT's kind from what the address echoes saw (pure), the echo's wire format,
a real probe against the server's echo on loopback, and advertised endpoints by name."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from pcloud.backend.nat.advertise import check_advertised, resolve_advertised
from pcloud.backend.nat.kind import DEPENDENT, INDEPENDENT, NONE, classify
from pcloud.backend.nat.probe import probe
from pcloud.server.protocol import echo_answer, echo_request, parse_echo_answer
from pcloud.server.reach.echo import start_echo

A, B = ("203.0.113.10", 8478), ("203.0.113.10", 8479)


def test_kinds() -> None:
    local = ["10.20.0.2"]
    assert classify({A: "198.51.100.20:4000", B: "198.51.100.20:4000"}, local, 4000) == INDEPENDENT
    assert classify({A: "198.51.100.30:4000", B: "198.51.100.30:5123"}, local, 4000) == DEPENDENT
    assert classify({A: "10.20.0.2:4000", B: "10.20.0.2:4000"}, local, 4000) == NONE
    assert classify({}, local, 4000).startswith("unknown (no address echo")
    lan = {("192.168.0.111", 8478): "192.168.0.112:4000"}
    assert classify(lan, ["192.168.0.112"], 4000).startswith("unknown (only servers on this LAN")
    assert classify({A: "198.51.100.20:4000"}, local, 4000).startswith("behind NAT")


def test_echo_wire_answers_only_requests_and_never_grows() -> None:
    nonce = os.urandom(16)
    request = echo_request(nonce)
    answer = echo_answer(request, ("2001:db8::1", 65535))
    assert answer is not None and len(answer) <= len(request)
    assert parse_echo_answer(answer, nonce) == "[2001:db8::1]:65535"
    assert parse_echo_answer(answer, os.urandom(16)) is None  # another probe's answer
    assert echo_answer(b"x" * 96, ("198.51.100.1", 1)) is None
    assert echo_answer(request[:-1], ("198.51.100.1", 1)) is None


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_probe_against_the_real_echo_on_loopback() -> None:
    async def run() -> tuple[dict[tuple[str, int], str], int]:
        ports = (_free_udp_port(), _free_udp_port())
        transports = await start_echo(["127.0.0.1"], ports)
        try:
            return await probe([("127.0.0.1", p) for p in ports], timeout=3.0)
        finally:
            for t in transports:
                t.close()

    seen, port = asyncio.run(run())
    assert len(seen) == 2 and set(seen.values()) == {f"127.0.0.1:{port}"}


def test_advertised_endpoint_by_ip_or_name() -> None:
    assert check_advertised("203.0.113.10:51820") == "203.0.113.10:51820"
    assert check_advertised("Home.Example.NET.:51820") == "home.example.net:51820"
    for bad in ("home.example.net", "home.example.net:0", "bad_name!:51820", "999.1.1.1:1"):
        with pytest.raises(ValueError):
            check_advertised(bad)
    assert asyncio.run(resolve_advertised("203.0.113.10:51820")) == "203.0.113.10:51820"
    # A name that resolves only to loopback is never advertised.
    assert asyncio.run(resolve_advertised("localhost:51820")) is None
