"""The migration's fingerprint: stable across key order, sensitive to any record or the counter."""

from __future__ import annotations

import copy

from pcloud.server.store.base import KINDS, Snapshot
from pcloud.server.store.migrate import fingerprint


def snap(**records: dict[str, dict[str, object]]) -> Snapshot:
    out: Snapshot = Snapshot(version=7, records={k: {} for k in KINDS})
    for kind, recs in records.items():
        out.records[kind] = dict(recs)  # type: ignore[index]
    return out


def test_fingerprint_ignores_order_and_sees_every_change() -> None:
    a = snap(user={"x": {"a": 1, "b": [1, 2]}, "y": {"z": None}}, addr={"10.0.0.1": {"node": 1}})
    b = snap(addr={"10.0.0.1": {"node": 1}}, user={"y": {"z": None}, "x": {"b": [1, 2], "a": 1}})
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a).counts["user"] == 2 and fingerprint(a).counts["addr"] == 1
    changed = copy.deepcopy(a)
    changed.records["user"]["x"]["b"] = [2, 1]
    assert fingerprint(changed).digest != fingerprint(a).digest
    moved = copy.deepcopy(a)
    moved.records["token"]["x"] = moved.records["user"].pop("x")  # same value, other kind
    assert fingerprint(moved).digest != fingerprint(a).digest
    bumped = copy.deepcopy(a)
    bumped.version = 8
    assert fingerprint(bumped) != fingerprint(a)
