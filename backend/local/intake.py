"""What a netmap answer changes: the pure decision behind `LocalBackend._on_netmap`.

The long poll answers "nothing new" often, and an answer may change only the list of
coordination servers, which is kept for the jobs but means nothing to WireGuard.
"""

from __future__ import annotations

from pcloud.backend.netmap import apply_netmap, servers_changed
from pcloud.server.protocol import Netmap


def intake(held: Netmap | None, answer: Netmap) -> tuple[Netmap | None, bool]:
    """(the netmap to hold, None when the answer changes nothing; whether the interface must
    follow, False when only the coordination servers changed)."""
    if not answer.full and not answer.peers_changed and not answer.peers_removed:
        if held is None:
            return None, False  # a delta before any full map: the next full answer repairs it
        if answer.self == held.self and answer.filter is None and not servers_changed(held, answer):
            return None, False  # the long poll's "nothing new" answer
    merged = apply_netmap(held, answer)
    if merged == held:
        return None, False
    same_tunnels = held is not None and (
        (merged.self, merged.peers, merged.filter, merged.domain)
        == (held.self, held.peers, held.filter, held.domain)
    )
    return merged, not same_tunnels
