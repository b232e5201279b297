"""Warnings that say when a limit bites without letting the attacker flood the log."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass


@dataclass
class _Kind:
    last: float
    held_back: int = 0


class RateLimitedLog:
    """At most one warning per `kind` every `interval` seconds; the next one that goes out says
    how many were held back meanwhile."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._kinds: dict[str, _Kind] = {}

    def warning(self, kind: str, message: str, *args: object) -> bool:
        """Log `message % args` unless `kind` was logged within the interval; True if logged."""
        now = time.monotonic()
        entry = self._kinds.get(kind)
        if entry is not None and now - entry.last < self.interval:
            entry.held_back += 1
            return False
        if entry is not None and entry.held_back:
            message += " (%d more like this in the last %.0f s)"
            args = (*args, entry.held_back, now - entry.last)
        self._kinds[kind] = _Kind(now)
        self.logger.warning(message, *args)
        return True
