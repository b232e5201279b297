"""The netmap stream's wire format (`GET /api/v1/netmap/stream`), shared by server and backend.

The answer is newline-delimited JSON (`application/x-ndjson`) over the request's own HTTPS
connection: every line is one JSON object, either a `Netmap` (the same document the long poll
answers: the first one a full map, or a delta from the `since` the client sent, later ones deltas
from the previous line's version) or the keep-alive line below, written when nothing else was for
`KEEPALIVE_HEADER` seconds. A client that hears nothing for about two intervals knows its server
is gone without asking it anything.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

STREAM_PATH = "/netmap/stream"
MEDIA_TYPE = "application/x-ndjson"
# The server's keep-alive period in seconds, sent as a response header so a client sizes its
# silence deadline to the server it talks to.
KEEPALIVE_HEADER = "x-pcloud-keep-alive"
KEEPALIVE_LINE = b'{"keep_alive":true}\n'
# A full map of 10,000 peers is ~5 MB: a line far beyond that is a broken or hostile server.
MAX_LINE_BYTES = 64 * 1024 * 1024


class StreamKeepAlive(BaseModel):
    """The keep-alive line: nothing changed, the server is alive."""

    model_config = ConfigDict(extra="forbid")
    keep_alive: Literal[True]
