"""One call to whichever coordination server answers, for jobs that outlive a single server.

remove-server stops this machine's own server halfway, and with HA every server serves the same
store: so a job tries the servers in order (the caller's list), and only a server that does not
answer moves on to the next. An error answer is final: another server would give the same
answer from the same store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pcloud.backend.control.client import ControlClient
from pcloud.backend.control.errors import ControlUnreachable


async def call_any(
    ca_pem: str,
    urls: Sequence[str],
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: Any = None,
    timeout: float = 10.0,
) -> Any:
    """`METHOD path` on the first of `urls` that answers: its JSON body; ControlError on an
    error answer, ControlUnreachable when none answered."""
    last: ControlUnreachable | None = None
    async with ControlClient.pinned(ca_pem, timeout=timeout) as client:
        for url in urls:
            try:
                return await client.call(method, url, path, token=token, body=body)
            except ControlUnreachable as exc:
                last = exc
    raise last or ControlUnreachable(f"no coordination server to ask (tried {list(urls)})")
