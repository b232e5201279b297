"""Human units and ages for what the local API reports (byte counts, handshake times), shared by
the CLI and the GUI: one leaf with no imports of ours, so both may use it (tests/layering.toml).
"""

from __future__ import annotations

from datetime import UTC, datetime

# (seconds, compact label, spelled-out label), largest first
_AGE_UNITS = ((86400, "d", "d"), (3600, "h", "h"), (60, "m", "min"), (1, "s", "s"))


def human_bytes(n: int) -> str:
    """1536 -> "1.5 KiB"; binary units as `ip -s` and WireGuard tools print them."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def ago(when: datetime | None, now: datetime | None = None, *, compact: bool = False) -> str:
    """How long ago `when` was in its largest whole unit: "3 min ago", or "3m ago" when
    `compact` (a terminal table); "never" for None. Clock skew never makes it negative."""
    if when is None:
        return "never"
    now = now or datetime.now(UTC)
    if when.tzinfo is None:  # the backend sends UTC; be lenient with naive values
        when = when.replace(tzinfo=UTC)
    seconds = max(0, int((now - when).total_seconds()))
    for size, short, spelled in _AGE_UNITS:
        if seconds >= size or size == 1:
            count = seconds // size
            return f"{count}{short} ago" if compact else f"{count} {spelled} ago"
    raise AssertionError("unreachable")
