"""Turns raw local-API values into the words the GUI shows (states, hints, expiries); byte
counts and ages come from pcloud.backend.localapi.format, shared with the CLI."""

from __future__ import annotations

from pcloud.backend.localapi.schemas import Status

# What each backend state means to a person; "Unavailable" is ours: no answer from the backend.
STATE_LABELS = {
    "Running": "Connected",
    "Starting": "Connecting…",
    "Stopped": "Disconnected",
    "NeedsLogin": "Needs login",
    "Error": "Error",
}

# Which tray picture each state gets (resources/icons/pcloud-<name>.svg).
STATE_ICONS = {
    "Running": "connected",
    "Starting": "working",
    "Stopped": "disconnected",
    "NeedsLogin": "needs-login",
    "Error": "error",
}

# Running, but the coordination server does not answer (the tunnels keep working).
UNREACHABLE_ICON = "unreachable"

BACKEND_START_HINT = "sudo systemctl start pcloud-backend"
GROUP_HINT = "sudo usermod -aG pcloud $USER"


def state_label(state: str | None) -> str:
    if state is None:
        return "Backend unavailable"
    return STATE_LABELS.get(state, state)


def status_label(status: Status | None) -> str:
    """The header's and the tray's words: the state, or the distinct "Connected, coordination
    server unreachable since ..." while the server does not answer."""
    if status is None:
        return state_label(None)
    return status.unreachable_note() or state_label(status.state)


def icon_key(status: Status | None) -> str | None:
    """What `icons.state_icon` draws: the backend state, or UNREACHABLE_ICON."""
    if status is not None and status.unreachable_note() is not None:
        return UNREACHABLE_ICON
    return status.state if status else None


def expiry_label(seconds: int) -> str:
    if seconds % 86400 == 0:
        days = seconds // 86400
        return f"{days} day" + ("s" if days != 1 else "")
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return f"{hours} hour" + ("s" if hours != 1 else "")
    return f"{seconds // 60} min"
