"""Login limiting and the bound on concurrent password hashes.

Three budgets of failed logins, each a sliding window with a growing backoff (every time a key
runs out of budget again its block doubles, up to `MAX_BACKOFF_S`; a success clears it):

- per (username, source address): the tight one (`per_pair`), which is all an honest user with a
  wrong password meets;
- per username from any address (`per_user`): a guess spread over many addresses;
- per source address for any username (`per_source`): one password sprayed over many accounts.

A blocked attempt is answered before any hashing, so it costs nothing. `HashGate` then bounds
argon2id (64 MiB and tens of ms each) to a few at once with a short queue; past it a login is
answered 503 with Retry-After at once instead of piling up threads and memory.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

MAX_BACKOFF_S = 15 * 60.0
MAX_KEYS = 10_000


class Budget:
    """Failures per key in a sliding window; an exhausted key is blocked with backoff."""

    def __init__(self, limit: int, window_s: float = 60.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._strikes: dict[str, int] = {}
        self._until: dict[str, float] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        cutoff = now - self.window_s
        while q and q[0] < cutoff:
            q.popleft()
        return q

    def blocked(self, key: str) -> float:
        """Seconds until `key` may try again (0 when it may now)."""
        now = time.monotonic()
        wait = self._until.get(key, 0.0) - now
        return max(0.0, wait)

    def failed(self, key: str) -> None:
        now = time.monotonic()
        q = self._recent(key, now)
        q.append(now)
        if len(q) >= self.limit:
            strikes = self._strikes.get(key, 0) + 1
            self._strikes[key] = strikes
            self._until[key] = now + min(MAX_BACKOFF_S, self.window_s * 2 ** (strikes - 1))
            q.clear()
        if len(self._failures) > MAX_KEYS:
            self._prune(now)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)
        self._strikes.pop(key, None)
        self._until.pop(key, None)

    def _prune(self, now: float) -> None:
        # Bound memory under a spray of keys: drop keys with nothing recent and no block.
        for key in list(self._failures):
            if not self._recent(key, now) and self._until.get(key, 0.0) <= now:
                self._failures.pop(key, None)
                self._until.pop(key, None)
                self._strikes.pop(key, None)


class LoginLimiter:
    def __init__(
        self, per_pair: int, per_user: int = 20, per_source: int = 30, window_s: float = 60.0
    ) -> None:
        self.pair = Budget(per_pair, window_s)
        self.user = Budget(per_user, window_s)
        self.source = Budget(per_source, window_s)

    def blocked(self, username: str, client: str) -> tuple[float, str]:
        """(seconds to wait, which budget ran out); (0, "") when the attempt may go ahead."""
        for budget, key, what in (
            (self.pair, f"{username}\0{client}", "this username from this address"),
            (self.source, client, "this address"),
            (self.user, username, "this username"),
        ):
            wait = budget.blocked(key)
            if wait > 0:
                return wait, what
        return 0.0, ""

    def failed(self, username: str, client: str) -> None:
        self.pair.failed(f"{username}\0{client}")
        self.user.failed(username)
        self.source.failed(client)

    def succeeded(self, username: str, client: str) -> None:
        self.pair.succeeded(f"{username}\0{client}")
        self.user.succeeded(username)


class Busy(Exception):
    """Every hashing slot and queue place is taken."""


class HashGate:
    """At most `concurrent` password hashes at once, `queued` more waiting; else `Busy`."""

    def __init__(self, concurrent: int, queued: int) -> None:
        self._slots = asyncio.Semaphore(concurrent)
        self._room = concurrent + queued
        self._inside = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._inside >= self._room:
            raise Busy
        self._inside += 1
        try:
            async with self._slots:
                yield
        finally:
            self._inside -= 1
