"""Which coordination servers a job asks, and asking them (`control/failover.py` does the calls).

remove-server stops this machine's own server halfway, and with HA every server serves the same
store: so a job tries the servers the netmap lists (`servers`), then the join link's, skipping any
it is told to avoid (its own, once stopped).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pcloud.backend.control import failover
from pcloud.backend.control.pinning import base_url
from pcloud.backend.errors import NotLoggedIn

if TYPE_CHECKING:
    from pcloud.backend.node_host import NodeHost


def server_urls(backend: NodeHost, avoid: Iterable[str] = ()) -> list[str]:
    """Coordination servers to try, in order: the netmap's list, then the join link's."""
    if backend.node is None:
        raise NotLoggedIn()
    urls = [u.rstrip("/") for u in (backend.netmap.servers if backend.netmap else [])]
    urls.append(base_url(backend.node.server_url))
    skip = {u.rstrip("/") for u in avoid}
    return [u for u in dict.fromkeys(urls) if u not in skip]


async def call_any(
    backend: NodeHost,
    method: str,
    path: str,
    *,
    body: Any = None,
    token: str | None = None,
    avoid: Iterable[str] = (),
) -> Any:
    """`METHOD path` on the first server that answers, with this node's token by default;
    ControlError on an error answer (final), ControlUnreachable when none answers."""
    ca = backend.store.load_ca()
    if backend.node is None or ca is None:
        raise NotLoggedIn()
    token = token or backend.node.node_token
    return await failover.call_any(
        ca, server_urls(backend, avoid), method, path, token=token, body=body
    )
