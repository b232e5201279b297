"""Free ports for test servers on loopback (or a lab address).

A port the kernel hands out for `bind(0)` comes from the ephemeral range, the same range every
outgoing connection draws its source port from: between our pick and the server's bind, another
test's connection could take it (CI once failed with EADDRINUSE that way). So we pick below the
ephemeral range, where only explicit binds land, and check the port is free for both TCP and UDP
(several of our servers bind both on one port).
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 20000


def _ephemeral_start() -> int:
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _free_on_both(address: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with (
            socket.socket(family, socket.SOCK_STREAM) as tcp,
            socket.socket(family, socket.SOCK_DGRAM) as udp,
        ):
            tcp.bind((address, port))
            udp.bind((address, port))
    except OSError:
        return False
    return True


def free_port(address: str = "127.0.0.1") -> int:
    """A port free for TCP and UDP on `address`, outside the ephemeral range."""
    top = max(_ephemeral_start() - 1, _LOWEST + 1000)
    for _ in range(200):
        port = random.randint(_LOWEST, top)
        if _free_on_both(address, port):
            return port
    raise RuntimeError(f"no free port on {address} in {_LOWEST}-{top}")
