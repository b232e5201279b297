"""Login attempt limiting: a sliding window of failures per (username, client address)."""

from __future__ import annotations

import time
from collections import deque


class LoginLimiter:
    def __init__(self, per_minute: int, window_s: float = 60.0) -> None:
        self.per_minute = per_minute
        self.window_s = window_s
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def _recent(self, key: tuple[str, str]) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        cutoff = time.monotonic() - self.window_s
        while q and q[0] < cutoff:
            q.popleft()
        return q

    def blocked(self, username: str, client: str) -> float:
        """Seconds until the next attempt is allowed (0 when allowed now)."""
        q = self._recent((username, client))
        if len(q) < self.per_minute:
            return 0.0
        return max(0.0, q[0] + self.window_s - time.monotonic())

    def failed(self, username: str, client: str) -> None:
        self._recent((username, client)).append(time.monotonic())
        if len(self._failures) > 10_000:
            # Bound memory under a spray of usernames: drop windows that have emptied.
            for k in [k for k, v in self._failures.items() if not v]:
                del self._failures[k]

    def succeeded(self, username: str, client: str) -> None:
        self._failures.pop((username, client), None)
