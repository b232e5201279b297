"""Per-change memos of the netmap fan-out, shared by every node that a change wakes.

A server-role node's change wakes 10,000 streams, each asking the same two questions: does my
node see the changed peer, and what is the JSON of the delta after my own record. `SeenBy`
answers the first with one set per peer and version, `SharedTails` the second with one bytes
object per distinct delta (netmap.build uses both; the state holds one of each).
"""

from __future__ import annotations

from collections.abc import Callable


class SeenBy:
    """Who sees a changed peer (`peers_of`, symmetric: the same as `State.visible` pair by
    pair), worked out once per key and peer: one set lookup per woken node replaces two walks
    of the policy's rules. The key is (version, id of the peer index): every change of the
    index (nodes, policy, admins) comes with a new version (`FanOut.stamp`) or a new index."""

    def __init__(self) -> None:
        self._key: tuple[int, int] = (0, 0)
        self._sets: dict[int, set[int]] = {}

    def get(
        self, key: tuple[int, int], peer_id: int, peers_of: Callable[[int], set[int]]
    ) -> set[int]:
        if key != self._key:
            self._key = key
            self._sets = {}
        seen = self._sets.get(peer_id)
        if seen is None:
            seen = self._sets[peer_id] = peers_of(peer_id)
        return seen


class SharedTails:
    """The part of a delta after the node's own record, joined once for every node that gets
    the same one. An entry holds while the peer JSON and the trailer it was joined from are
    still the cached ones (the very same bytes objects: the state drops a peer's JSON at each
    change of it, and the trailer at each change of the server list), so it needs neither a
    version nor an invalidation hook."""

    LIMIT = 64  # distinct deltas in flight at once are few; past this, start over

    def __init__(self) -> None:
        self._tails: dict[tuple[tuple[int, ...], tuple[int, ...]], tuple[list[bytes], bytes]] = {}

    def get(
        self,
        changed_ids: list[int],
        changed: list[bytes],
        removed: list[int],
        trailer: bytes,
        render: Callable[[], bytes],
    ) -> bytes:
        key = (tuple(changed_ids), tuple(removed))
        hit = self._tails.get(key)
        if hit is not None:
            parts, tail = hit
            if parts[-1] is trailer and all(a is b for a, b in zip(parts, changed, strict=False)):
                return tail
        if len(self._tails) >= self.LIMIT:
            self._tails.clear()
        tail = render()
        self._tails[key] = ([*changed, trailer], tail)
        return tail
