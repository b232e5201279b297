"""Human units and ages as the peer table and menu print them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pcloud.gui.format import ago, expiry_label, human_bytes, state_label

NOW = datetime(2026, 11, 25, 15, 42, tzinfo=UTC)


def test_human_bytes() -> None:
    assert human_bytes(0) == "0 B"
    assert human_bytes(1023) == "1023 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(734003200) == "700.0 MiB"
    assert human_bytes(5368709120) == "5.0 GiB"


def test_ago() -> None:
    assert ago(None, NOW) == "never"
    assert ago(NOW - timedelta(seconds=12), NOW) == "12 s ago"
    assert ago(NOW - timedelta(minutes=3, seconds=5), NOW) == "3 min ago"
    assert ago(NOW - timedelta(hours=2), NOW) == "2 h ago"
    assert ago(NOW - timedelta(days=4), NOW) == "4 d ago"
    assert ago(NOW + timedelta(seconds=3), NOW) == "0 s ago"  # clock skew never goes negative


def test_labels() -> None:
    assert state_label("Running") == "Connected"
    assert state_label(None) == "Backend unavailable"
    assert expiry_label(86400) == "1 day"
    assert expiry_label(7 * 86400) == "7 days"
    assert expiry_label(3600) == "1 hour"
