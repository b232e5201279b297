"""The words the tray and windows show for states and expiries (units and ages:
tests/unit/backend/test_localapi_format.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from pcloud.gui.format import expiry_label, state_label

NOW = datetime(2026, 11, 25, 15, 42, tzinfo=UTC)


def test_labels() -> None:
    assert state_label("Running") == "Connected"
    assert state_label(None) == "Backend unavailable"
    assert expiry_label(86400) == "1 day"
    assert expiry_label(7 * 86400) == "7 days"
    assert expiry_label(3600) == "1 hour"
