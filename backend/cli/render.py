"""Status -> what people read: the `pcloud status` table, human units and ages.

Pure functions of the local API's `Status` (plus "now"), so they are tested without a backend.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

from pcloud.backend.localapi.format import ago, human_bytes
from pcloud.backend.localapi.schemas import PeerStatus, Status

ACTIVE_WITHIN_S = 180  # WireGuard rekeys every 2 min while traffic flows


def activity(peer: PeerStatus, now: datetime) -> str:
    """`active; direct IP:PORT`, `idle` or `offline, last seen 5m ago` (+ tx/rx when any)."""
    recent = (
        peer.last_handshake is not None
        and (now - peer.last_handshake).total_seconds() < ACTIVE_WITHIN_S
    )
    if recent:
        text = f"active; direct {peer.endpoint}" if peer.endpoint else "active"
    elif not peer.online:
        text = "offline"
        if peer.last_seen:
            text += f", last seen {ago(peer.last_seen, now, compact=True)}"
    else:
        # Keepalives keep a live path shaking hands: without one the peer is unreachable.
        text = peer.path or "idle"
    if peer.tx_bytes or peer.rx_bytes:
        text += f", tx {human_bytes(peer.tx_bytes)} rx {human_bytes(peer.rx_bytes)}"
    return text


def status_table(status: Status, now: datetime | None = None, *, with_self: bool = True) -> Table:
    now = now or datetime.now(UTC)
    rows = []
    if with_self and status.self:
        me = status.self
        rows.append((me.address, me.dns_name or me.hostname, me.user, me.role, "-"))
    for peer in sorted(status.peers, key=lambda p: p.hostname):
        # The name other devices resolve (HOST.<domain>), so it can be copied into `ssh`.
        name = peer.dns_name or peer.hostname
        rows.append((peer.address, name, peer.user, peer.role, activity(peer, now)))
    table = Table(box=None, show_header=False, pad_edge=False)
    for i in range(4):
        # Identity columns never shrink into "10.0.0…" on a narrow terminal; the activity
        # column wraps instead.
        table.add_column(no_wrap=True, min_width=max((len(r[i]) for r in rows), default=1))
    table.add_column(overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def peers_table(status: Status, now: datetime | None = None) -> Table:
    """`pcloud peers`: one headed row per peer (HOSTNAME IP ONLINE LAST-HANDSHAKE ENDPOINT),
    "online" as the coordination server sees it, the rest as the local WireGuard does."""
    now = now or datetime.now(UTC)
    table = Table(box=None, pad_edge=False, header_style="")
    for name in ("HOSTNAME", "IP", "ONLINE", "LAST-HANDSHAKE"):
        table.add_column(name, no_wrap=True)
    table.add_column("ENDPOINT", overflow="fold")
    for peer in sorted(status.peers, key=lambda p: p.hostname):
        handshake = ago(peer.last_handshake, now, compact=True)
        table.add_row(
            peer.hostname,
            peer.address,
            "yes" if peer.online else "no",
            handshake,
            peer.endpoint or "-",
        )
    return table


def state_line(status: Status) -> str | None:
    """A `# ...` line explaining a state other than Running (as `tailscale status`)."""
    lines = {
        "NeedsLogin": "# Logged out: run `pcloud login JOIN-LINK`",
        "Stopped": "# PCloud is stopped: run `pcloud up`",
        "Starting": "# PCloud is starting",
        "Error": f"# Error: {status.error}",
    }
    line = lines.get(status.state)
    note = status.unreachable_note()
    if note:
        line = f"# {note}; the tunnels keep working, peer changes wait for it"
        if status.error:
            line += f"\n# {status.error}"
    elif status.state == "Running" and status.error:
        line = f"# Warning: {status.error}"
    return line


def print_table(table: Table) -> None:
    # Piped output (scripts, tests) is never cut to a guessed 80 columns.
    width = None if sys.stdout.isatty() else 10_000
    Console(width=width, highlight=False).print(table)
