"""Process-wide runtime settings for a server holding ~10,000 idle TLS connections (DESIGN 7)."""

from __future__ import annotations

import asyncio.sslproto
import gc

# Bytes asyncio's TLS transport reads from a socket at a time: a poll or a registration is a
# few hundred bytes, and every connection keeps a buffer this size (see tune_runtime).
SSL_READ_BUFFER = 1024
# Allocations (less deallocations) between two young-generation collections (default 700).
GC_THRESHOLD = 20_000


def tune_runtime() -> None:
    """Process-wide settings for holding ~10,000 idle TLS connections (DESIGN section 7)."""
    # asyncio's SSLProtocol allocates a zeroed read buffer of `max_size` (256 KiB) per
    # connection: 2.5 GB at 10,000 long polls. A private attribute, hence the hasattr guard; one
    # TLS record is at most 16 KiB, so a larger buffer only saves read calls on bulk transfers,
    # which this server does not have.
    if hasattr(asyncio.sslproto.SSLProtocol, "max_size"):
        asyncio.sslproto.SSLProtocol.max_size = SSL_READ_BUFFER
    # The heap holds ~100 objects per connected node that live as long as the connection; with
    # the default thresholds the cyclic GC walked them over and over while 10,000 answers went
    # out (a quarter of a fan-out's CPU in a profile). Collect young objects less often; the
    # modules, app and state loaded at start are frozen out of collections in `serve`.
    gc.set_threshold(GC_THRESHOLD, 20, 20)
