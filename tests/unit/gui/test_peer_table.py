"""The peer table model changes in place: rows keep their identity, only moved cells change."""

from __future__ import annotations

from datetime import UTC, datetime

from PySide6.QtCore import QPersistentModelIndex, Qt

from pcloud.gui.models.peer_table import (
    ADDRESS,
    HANDSHAKE,
    HOSTNAME,
    RX,
    PeerFilterProxy,
    PeerTableModel,
)
from tests.unit.gui.conftest import status

NOW = datetime(2026, 11, 25, 15, 42, tzinfo=UTC)


def make_model() -> tuple[PeerTableModel, list[tuple[str, object]]]:
    model = PeerTableModel()
    model.set_clock(NOW)
    seen: list[tuple[str, object]] = []
    model.dataChanged.connect(lambda a, b, roles=(): seen.append(("changed", (a.row(), b.row()))))
    model.rowsInserted.connect(lambda _p, a, b: seen.append(("inserted", (a, b))))
    model.rowsRemoved.connect(lambda _p, a, b: seen.append(("removed", (a, b))))
    model.modelReset.connect(lambda: seen.append(("reset", None)))
    return model, seen


def test_columns_render_human_values() -> None:
    model, _ = make_model()
    model.set_peers(status("running_peers").peers)
    rows = {model.index(r, HOSTNAME).data(): r for r in range(model.rowCount())}
    nas = rows["nas"]
    assert model.index(nas, ADDRESS).data() == "10.0.0.1"
    assert model.index(nas, HANDSHAKE).data() == "12 s ago"
    assert model.index(nas, RX).data() == "700.0 MiB"
    assert model.index(rows["bob-laptop"], HANDSHAKE).data() == "never"
    assert model.index(rows["bob-laptop"], 8).data() == "offline"
    assert model.index(nas, HOSTNAME).data(Qt.ItemDataRole.DecorationRole) is not None


def test_update_in_place_touches_only_changed_rows() -> None:
    model, seen = make_model()
    peers = status("running_peers").peers
    model.set_peers(peers)
    assert seen == [("inserted", (0, 3))]
    seen.clear()
    kept = QPersistentModelIndex(model.index(1, HOSTNAME))
    assert kept.data() == "pi-kitchen"

    bumped = [
        p.model_copy(update={"rx_bytes": p.rx_bytes + 100}) if p.hostname == "pi-kitchen" else p
        for p in peers
    ]
    model.set_peers(bumped)
    assert seen == [("changed", (1, 1))]  # one row, no reset, no insert/remove
    assert kept.isValid() and kept.row() == 1
    assert model.index(1, RX).data() == "2.1 KiB"

    seen.clear()
    model.set_peers(bumped)  # the same status again: nothing to do
    assert seen == []

    newcomer = peers[0].model_copy(update={"node_id": 9, "hostname": "tv", "address": "10.0.0.9"})
    model.set_peers([p for p in bumped if p.hostname != "nas"] + [newcomer])
    assert seen == [("removed", (0, 0)), ("inserted", (3, 3))]
    assert kept.isValid() and kept.data() == "pi-kitchen"  # survived the removal above it
    assert [model.index(r, HOSTNAME).data() for r in range(model.rowCount())] == [
        "pi-kitchen",
        "bob-laptop",
        "build-box",
        "tv",
    ]


def test_tick_refreshes_only_the_age_column() -> None:
    model, seen = make_model()
    model.set_peers(status("running_peers").peers)
    seen.clear()
    model.tick()
    assert seen == [("changed", (0, 3))]


def test_filter_and_numeric_sort() -> None:
    model, _ = make_model()
    model.set_peers(status("running_peers").peers)
    proxy = PeerFilterProxy()
    proxy.setSourceModel(model)

    proxy.sort(RX, Qt.SortOrder.DescendingOrder)
    order = [proxy.index(r, HOSTNAME).data() for r in range(proxy.rowCount())]
    assert order == ["build-box", "nas", "pi-kitchen", "bob-laptop"]  # 5 GiB > 700 MiB > 2 KiB

    proxy.set_filter_text("BOB")
    assert proxy.rowCount() == 1 and proxy.index(0, HOSTNAME).data() == "bob-laptop"
    proxy.set_filter_text("10.0.0.1")  # dots are literal, not regex wildcards
    assert [proxy.index(r, HOSTNAME).data() for r in range(proxy.rowCount())] == ["nas"]
    proxy.set_filter_text("")
    assert proxy.rowCount() == 4


def test_hostname_tooltip_shows_the_dns_name() -> None:
    model, _ = make_model()
    peers = status("running_peers").peers
    named = [p.model_copy(update={"dns_name": f"{p.hostname}.pcloud.internal"}) for p in peers]
    model.set_peers(named)
    tips = {
        model.index(r, HOSTNAME).data(): model.index(r, HOSTNAME).data(Qt.ItemDataRole.ToolTipRole)
        for r in range(model.rowCount())
    }
    assert tips["nas"] == "DNS name: nas.pcloud.internal"
