"""The peer table's model: `PeerStatus` rows updated in place, plus a filter/sort proxy.

`set_peers` diffs by node id so a status event changes only the cells that moved (a view keeps its
selection, scroll position and sort), inserts new peers and removes gone ones. The "12 s ago"
column depends on the clock as well as on events, so `tick()` refreshes just that column.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
)

from pcloud.backend.localapi.format import ago, human_bytes
from pcloud.backend.localapi.schemas import PeerStatus
from pcloud.gui.icons import dot_icon

COLUMNS = [
    "Hostname",
    "User",
    "Role",
    "Overlay IP",
    "Path",
    "Last handshake",
    "Received",
    "Sent",
    "Online",
]
HOSTNAME, USER, ROLE, ADDRESS, ENDPOINT, HANDSHAKE, RX, TX, ONLINE = range(len(COLUMNS))

SORT_ROLE = Qt.ItemDataRole.UserRole + 1  # raw values, so "2 KiB" sorts after "900 B"
NODE_ID_ROLE = Qt.ItemDataRole.UserRole + 2

AnyIndex = QModelIndex | QPersistentModelIndex


def _ip_key(address: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in address.split("/")[0].split("."))
    except ValueError:
        return (1 << 16,)


class PeerTableModel(QAbstractTableModel):
    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._peers: list[PeerStatus] = []
        self._now: datetime | None = None  # fixed clock for tests and screenshots

    # -- updates -----------------------------------------------------------------------------

    def set_clock(self, now: datetime | None) -> None:
        self._now = now

    def peers(self) -> list[PeerStatus]:
        return list(self._peers)

    def set_peers(self, peers: list[PeerStatus]) -> None:
        new = {p.node_id: p for p in peers}
        # Removals first, from the bottom, so row numbers above stay valid.
        for row in range(len(self._peers) - 1, -1, -1):
            if self._peers[row].node_id not in new:
                self.beginRemoveRows(QModelIndex(), row, row)
                del self._peers[row]
                self.endRemoveRows()
        for row, old in enumerate(self._peers):
            fresh = new.pop(old.node_id)
            if fresh != old:
                self._peers[row] = fresh
                self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))
        if new:
            first = len(self._peers)
            self.beginInsertRows(QModelIndex(), first, first + len(new) - 1)
            self._peers.extend(new.values())
            self.endInsertRows()

    def tick(self) -> None:
        if self._peers:
            self.dataChanged.emit(
                self.index(0, HANDSHAKE),
                self.index(len(self._peers) - 1, HANDSHAKE),
                [Qt.ItemDataRole.DisplayRole],
            )

    # -- Qt model API ------------------------------------------------------------------------

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else len(self._peers)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self._peers):
            return None
        peer = self._peers[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(peer, col)
        if role == SORT_ROLE:
            return self._sort_value(peer, col)
        if role == NODE_ID_ROLE:
            return peer.node_id
        if role == Qt.ItemDataRole.DecorationRole and col == HOSTNAME:
            return dot_icon(peer.online)
        if role == Qt.ItemDataRole.ToolTipRole and col == HOSTNAME and peer.dns_name:
            return f"DNS name: {peer.dns_name}"  # what `ssh`/`ping` on this device resolve
        if role == Qt.ItemDataRole.ToolTipRole and col == HANDSHAKE and peer.last_handshake:
            return peer.last_handshake.isoformat(timespec="seconds")
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (RX, TX):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def _display(self, peer: PeerStatus, col: int) -> str:
        value: object
        match col:
            case 0:
                value = peer.hostname
            case 1:
                value = peer.user
            case 2:
                value = peer.role
            case 3:
                value = peer.address
            case 4:
                # The path (`direct IP:PORT`, `relay rpi111`): a relayed peer's raw endpoint is
                # only the backend's local proxy socket.
                value = peer.path or peer.endpoint or "—"
            case 5:
                value = ago(peer.last_handshake, self._now or datetime.now(UTC))
            case 6:
                value = human_bytes(peer.rx_bytes)
            case 7:
                value = human_bytes(peer.tx_bytes)
            case _:
                value = "online" if peer.online else "offline"
        return str(value)

    def _sort_value(self, peer: PeerStatus, col: int) -> Any:
        if col == ADDRESS:
            return ".".join(f"{n:05d}" for n in _ip_key(peer.address))
        if col == HANDSHAKE:
            return peer.last_handshake.timestamp() if peer.last_handshake else 0.0
        if col == RX:
            return peer.rx_bytes
        if col == TX:
            return peer.tx_bytes
        if col == ONLINE:
            return int(peer.online)
        return self._display(peer, col).lower()


class PeerFilterProxy(QSortFilterProxyModel):
    """Case-insensitive filter over hostname, user, role, IP and endpoint; sorts raw values."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setSortRole(SORT_ROLE)
        self.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.setDynamicSortFilter(True)  # rows re-sort when an event changes a sorted column
        self._needle = ""

    def filterAcceptsRow(self, source_row: int, source_parent: AnyIndex) -> bool:
        needle = self._needle
        if not needle:
            return True
        model = self.sourceModel()
        for col in (HOSTNAME, USER, ROLE, ADDRESS, ENDPOINT):
            text = model.data(model.index(source_row, col, source_parent))
            if text and needle in str(text).lower():
                return True
        return False

    def set_filter_text(self, text: str) -> None:
        # A plain substring, so "10.0.0.1" means what it says; setting the (unused) fixed
        # string is what makes Qt re-run filterAcceptsRow.
        self._needle = text.strip().lower()
        self.setFilterFixedString(self._needle)
