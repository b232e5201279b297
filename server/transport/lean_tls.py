"""asyncio's TLS protocol with less memory per held connection (installed by `serve.tune_runtime`).

asyncio's `SSLProtocol` (the TLS layer under every HTTPS connection of the server) keeps per
connection, besides OpenSSL's own state:

- a read buffer of `max_size` bytes (256 KiB by default, 1 KiB here: `READ_BUFFER`) and a
  memoryview on it. The socket transport fills the buffer (`get_buffer`, `recv_into`) and
  `buffer_updated` copies the bytes into the connection's `MemoryBIO` in the same call, with no
  other connection's code in between: one buffer per event loop thread serves every connection;
- ~40 instance attributes, past the 30 for which CPython shares an instance dict's keys between
  the instances of a class, so each connection pays for a dict of its own (~1.5 KiB). A dozen of
  them live in slots here, which keeps the rest under the limit.

`LeanSSLProtocol` does both (~2.5 KiB less per connection, ~25 MB at 10,000 held streams;
bench/README.md "Memory"). `install` makes asyncio build it wherever it starts TLS
(`loop.start_tls`, `create_server(ssl=...)`): both look `sslproto.SSLProtocol` up at call time.
"""

from __future__ import annotations

import asyncio.sslproto
import threading
from typing import Any

READ_BUFFER = 1024  # a poll or a registration is a few hundred bytes; a TLS record <= 16 KiB


class _Buffers(threading.local):
    """The current thread's read buffer and its view, shared by its loop's connections."""

    def __init__(self) -> None:
        self.buf = bytearray(READ_BUFFER)
        self.view = memoryview(self.buf)


_buffers = _Buffers()


class _SharedBuffer:
    """Stands for `SSLProtocol._ssl_buffer` (`view=False`) or `._ssl_buffer_view`: reading
    gives the thread's shared one; SSLProtocol's own assignments (one per connection in its
    `__init__`, a larger one in `get_buffer` if `max_size` grew) keep only a larger buffer."""

    def __init__(self, view: bool) -> None:
        self.view = view

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        return _buffers.view if self.view else _buffers.buf

    def __set__(self, obj: object, value: Any) -> None:
        if not self.view and len(value) > len(_buffers.buf):
            _buffers.buf = value
            _buffers.view = memoryview(value)


class LeanSSLProtocol(asyncio.sslproto.SSLProtocol):
    """asyncio's SSLProtocol with one read buffer per thread and some attributes in slots."""

    # Always set in SSLProtocol.__init__ (a slot has no class default to fall back on).
    __slots__ = (
        "_server_side",
        "_server_hostname",
        "_sslcontext",
        "_extra",
        "_write_backlog",
        "_write_buffer_size",
        "_waiter",
        "_loop",
        "_incoming",
        "_outgoing",
        "_state",
        "_app_state",
        "_sslobj",
    )
    _ssl_buffer = _SharedBuffer(view=False)
    _ssl_buffer_view = _SharedBuffer(view=True)


def install(read_buffer: int = READ_BUFFER) -> bool:
    """Make asyncio use `LeanSSLProtocol` with a `read_buffer`-byte read size; False (and
    nothing changed) if this Python's SSLProtocol lacks what it relies on."""
    base = asyncio.sslproto.SSLProtocol
    if base is LeanSSLProtocol:
        LeanSSLProtocol.max_size = read_buffer
        return True
    needed = ("max_size", "get_buffer", "buffer_updated")
    if LeanSSLProtocol.__mro__[1] is not base or not all(hasattr(base, n) for n in needed):
        return False
    LeanSSLProtocol.max_size = read_buffer
    asyncio.sslproto.SSLProtocol = LeanSSLProtocol  # type: ignore[misc]
    return True
