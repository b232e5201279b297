"""Turns raw local-API values into the words the GUI shows (states, hints, expiries); byte
counts and ages come from pcloud.backend.localapi.format, shared with the CLI."""

from __future__ import annotations

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

BACKEND_START_HINT = "sudo systemctl start pcloud-backend"
GROUP_HINT = "sudo usermod -aG pcloud $USER"


def state_label(state: str | None) -> str:
    if state is None:
        return "Backend unavailable"
    return STATE_LABELS.get(state, state)


def expiry_label(seconds: int) -> str:
    if seconds % 86400 == 0:
        days = seconds // 86400
        return f"{days} day" + ("s" if days != 1 else "")
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return f"{hours} hour" + ("s" if hours != 1 else "")
    return f"{seconds // 60} min"
