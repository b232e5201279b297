"""The backend's state: an enum worked out from facts by one pure function, never assigned.

`next_state(facts)` is the only producer of a `State` (as Tailscale's `nextStateLocked`): the
core gathers facts (logged in? wants to run? holds a netmap? interface configured? fatal error?)
and asks. Keeping it pure lets the whole table be unit-tested without I/O.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


class State(enum.StrEnum):
    NEEDS_LOGIN = "NeedsLogin"  # no node credentials: `pcloud login` first
    STOPPED = "Stopped"  # logged in, but the user asked for the tunnel to be down
    STARTING = "Starting"  # wants to run; waiting for a netmap or for the interface
    RUNNING = "Running"  # netmap applied to a live interface
    ERROR = "Error"  # a fatal problem that needs a person (reason in `error`)


@dataclass(frozen=True)
class Facts:
    logged_in: bool
    want_running: bool
    have_netmap: bool
    driver_up: bool
    fatal_error: str | None = None


def next_state(facts: Facts) -> tuple[State, str]:
    """The state these facts imply, with the reason (for the transition log)."""
    if facts.fatal_error:
        return State.ERROR, facts.fatal_error
    if not facts.logged_in:
        return State.NEEDS_LOGIN, "no node credentials"
    if not facts.want_running:
        return State.STOPPED, "disconnected by request"
    if not facts.have_netmap:
        return State.STARTING, "waiting for the first netmap"
    if not facts.driver_up:
        return State.STARTING, "configuring the WireGuard interface"
    return State.RUNNING, "netmap applied to the interface"


class StateTracker:
    """Holds the current state and logs each real transition as `old -> new (reason)`."""

    def __init__(self) -> None:
        self.state: State | None = None
        self.reason = ""

    def update(self, facts: Facts) -> bool:
        """Recompute from facts; True when the state changed."""
        new, reason = next_state(facts)
        if new == self.state:
            self.reason = reason
            return False
        old = self.state.value if self.state else "None"
        log.info("state %s -> %s (%s)", old, new.value, reason)
        self.state, self.reason = new, reason
        return True
