"""Attacks on the backend's local API socket, run by tests as another uid (`setpriv`).

    python tests/support/localapi_attack.py ATTACK SOCKET [N]

Prints one JSON value: what the attacker saw. Standard library only, so it runs under any uid
whatever it may import.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from typing import Any

HEAD = b"GET /v1/status HTTP/1.1\r\nHost: x\r\n"
MIB = 1024 * 1024


def connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.settimeout(10)
    return s


def header_bomb(path: str) -> Any:
    """64 MiB of small headers: [bytes sent before the backend stopped reading, its answer]."""
    s = connect(path)
    s.settimeout(2)
    sent = 0
    try:
        s.sendall(HEAD)
        while sent < 64 * MIB:
            s.sendall(b"x: y\r\n" * 10923)
            sent += 65538
    except OSError:
        pass
    s.settimeout(10)
    return [sent, s.recv(4096).decode()]


def slow_head(path: str) -> Any:
    """Part of a head, then silence: [what came back, seconds until the backend closed]."""
    s = connect(path)
    started = time.monotonic()
    s.sendall(HEAD + b"X-a: ")
    data = s.recv(100)
    return [data.decode(), time.monotonic() - started]


def hold(path: str, n: int) -> Any:
    """`n` idle connections, then one more: [its answer, a request's answer after one closed]."""
    held = [connect(path) for _ in range(n)]
    extra = connect(path)
    refused = extra.recv(4096).decode()
    held.pop().close()
    answer = ""
    for _ in range(100):  # the backend frees the slot when it sees the close
        again = connect(path)
        again.sendall(HEAD + b"\r\n")
        answer = again.recv(100).decode()
        again.close()
        if answer.startswith("HTTP/1.1 200"):
            break
        time.sleep(0.05)
    return [refused, answer]


def streams(path: str, n: int) -> Any:
    """`n` event streams held at once: the status code of each."""
    codes = []
    socks = []
    for _ in range(n):
        s = connect(path)
        s.sendall(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
        codes.append(int(s.recv(4096).split(b" ")[1]))
        socks.append(s)
    return codes


def post(path: str, route: str, body: str) -> Any:
    """One POST with a JSON body: [status, decoded answer]."""
    s = connect(path)
    data = body.encode()
    s.sendall(
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (route.encode(), len(data), data)
    )
    raw = b""
    while chunk := s.recv(65536):
        raw += chunk
    head, _, payload = raw.partition(b"\r\n\r\n")
    return [int(head.split(b" ")[1]), json.loads(payload)]


if __name__ == "__main__":
    attack, sock, *rest = sys.argv[1:]
    if attack in ("hold", "streams"):
        result = globals()[attack](sock, int(rest[0]))
    elif attack == "post":
        result = post(sock, rest[0], rest[1])
    else:
        result = globals()[attack](sock)
    print(json.dumps(result))
