"""asyncio's TLS protocol with less memory per held connection (installed by `serve.tune_runtime`).

asyncio's `SSLProtocol` (the TLS layer under every HTTPS connection of the server) keeps per
connection, besides OpenSSL's own state:

- a read buffer of `max_size` bytes (256 KiB by default, 1 KiB here: `READ_BUFFER`) and a
  memoryview on it. The socket transport fills the buffer (`get_buffer`, `recv_into`) and
  `buffer_updated` copies the bytes into the connection's `MemoryBIO` in the same call, with no
  other connection's code in between: one buffer per event loop thread serves every connection;
- ~40 instance attributes, past the 30 for which CPython shares an instance dict's keys between
  the instances of a class, so each connection pays for a dict of its own (~1.5 KiB). A dozen of
  them live in slots here, which keeps the rest under the limit;
- an outgoing `MemoryBIO` whose buffer OpenSSL grows to the largest answer written at once and
  never shrinks (~1.2x: one 12 KB full netmap would keep ~15 KB for the connection's life).
  Here answers are encrypted `WRITE_SLICE` bytes at a time, the BIO emptied after each;
- a deque of pending writes (~760 bytes when empty); a list here.

`install` makes asyncio build `LeanSSLProtocol` wherever it starts TLS (`loop.start_tls`,
`create_server(ssl=...)`): both look `sslproto.SSLProtocol` up at call time. Figures:
bench/README.md, "Memory".
"""

from __future__ import annotations

import asyncio.sslproto
import threading
from typing import Any

READ_BUFFER = 1024  # a poll or a registration is a few hundred bytes; a TLS record <= 16 KiB
WRITE_SLICE = 1024  # plaintext per TLS record written (and the most an idle connection keeps)


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A list, not SSLProtocol's deque (~760 bytes even when empty): it holds the app's
        # writes not yet encrypted, rarely more than one, and is only appended to, indexed
        # at 0, deleted from at 0 and cleared.
        self._write_backlog = []  # type: ignore[assignment]

    def _do_write(self) -> None:
        # As SSLProtocol._do_write, but the outgoing MemoryBIO is emptied after every
        # WRITE_SLICE bytes encrypted: OpenSSL never shrinks a memory BIO's buffer, so one 12 KB
        # answer (a full netmap) would keep ~15 KB for the rest of the connection. The pieces
        # still go to the socket in one write.
        p: Any = self  # (typeshed describes an older SSLProtocol)
        out: list[bytes] = []
        try:
            while p._write_backlog:
                data = p._write_backlog[0]
                done = 0
                with memoryview(data) as whole, whole.cast("B") as view:
                    size = view.nbytes
                    try:
                        while done < size:
                            done += p._sslobj.write(view[done : done + WRITE_SLICE])
                            if not p._ssl_writing_paused:  # (paused: it waits in the BIO)
                                out.append(p._outgoing.read())
                    finally:
                        if done < size:
                            p._write_backlog[0] = data[done:]
                            p._write_buffer_size -= done
                        else:
                            del p._write_backlog[0]
                            p._write_buffer_size -= len(data)
        except asyncio.sslproto.SSLAgainErrors:
            pass
        if out:
            p._transport.write(out[0] if len(out) == 1 else b"".join(out))
        p._process_outgoing()


def install(read_buffer: int = READ_BUFFER) -> bool:
    """Make asyncio use `LeanSSLProtocol` with a `read_buffer`-byte read size; False (and
    nothing changed) if this Python's SSLProtocol lacks what it relies on."""
    base = asyncio.sslproto.SSLProtocol
    if base is LeanSSLProtocol:
        LeanSSLProtocol.max_size = read_buffer
        return True
    needed = ("max_size", "get_buffer", "buffer_updated", "_do_write", "_process_outgoing")
    if LeanSSLProtocol.__mro__[1] is not base or not all(hasattr(base, n) for n in needed):
        return False
    LeanSSLProtocol.max_size = read_buffer
    asyncio.sslproto.SSLProtocol = LeanSSLProtocol  # type: ignore[misc]
    return True
