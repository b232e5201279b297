"""Byte counts and ages as the CLI (compact) and the GUI (spelled out) print them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pcloud.backend.localapi.format import ago, human_bytes

NOW = datetime(2026, 11, 25, 15, 42, tzinfo=UTC)


def test_human_bytes() -> None:
    assert human_bytes(0) == "0 B"
    assert human_bytes(1023) == "1023 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(734003200) == "700.0 MiB"
    assert human_bytes(5 * 1024**3) == "5.0 GiB"
    assert human_bytes(3 * 1024**5) == "3072.0 TiB"  # the largest unit keeps counting


def test_ago_spelled_out() -> None:
    assert ago(None, NOW) == "never"
    assert ago(NOW - timedelta(seconds=12), NOW) == "12 s ago"
    assert ago(NOW - timedelta(minutes=3, seconds=5), NOW) == "3 min ago"
    assert ago(NOW - timedelta(hours=2), NOW) == "2 h ago"
    assert ago(NOW - timedelta(days=4), NOW) == "4 d ago"
    assert ago(NOW + timedelta(seconds=3), NOW) == "0 s ago"  # clock skew never goes negative
    assert ago(datetime(2026, 11, 25, 15, 41), NOW) == "1 min ago"  # naive is taken as UTC


def test_ago_compact() -> None:
    assert ago(NOW - timedelta(seconds=5), NOW, compact=True) == "5s ago"
    assert ago(NOW - timedelta(minutes=5, seconds=3), NOW, compact=True) == "5m ago"
    assert ago(NOW - timedelta(hours=3), NOW, compact=True) == "3h ago"
    assert ago(NOW - timedelta(days=2), NOW, compact=True) == "2d ago"
    assert ago(None, NOW, compact=True) == "never"
