"""The delta's shared bytes (netmap.build.SharedTails, SeenBy, the servers trailer): nodes that
get the same change share one rendered tail, and none of the caches outlives what it was made
from (a changed peer record, visibility, the server list).

Tier: unit (no app, no process), over a real SQLite store.
"""

from __future__ import annotations

import json
from pathlib import Path

from pcloud.server.netmap import build
from pcloud.server.netmap.broadcast import Delta
from tests.unit.server.test_state_core import add, open_state


async def test_same_delta_shares_its_tail_until_the_peer_changes(tmp_path: Path) -> None:
    state = open_state(tmp_path)
    a1, a2, a3 = [await add(state, f"laptop{i}") for i in range(3)]
    bob = await add(state, "bob-pc", user="bob")
    d = Delta(changed={a1.id})
    one, two = build.delta_json(state, a2.id, d), build.delta_json(state, a3.id, d)
    doc_one, doc_two = json.loads(one), json.loads(two)
    assert doc_one["self"]["hostname"] == "laptop1" and doc_two["self"]["hostname"] == "laptop2"
    assert doc_one["peers_changed"] == doc_two["peers_changed"]
    assert [p["hostname"] for p in doc_one["peers_changed"]] == ["laptop0"]
    assert doc_one["filter"] is None and doc_one["servers"] == state.server_urls()
    # The part after `self` is the very same bytes for both: joined once.
    tail = one[one.index(b',"peers":[') + len(b',"peers":[') :]
    assert two.endswith(tail)
    trailer = state.servers_json
    assert trailer is not None
    again = state.delta_tails.get([a1.id], [state.peer_json[a1.id]], [], trailer, bytes)
    assert again is state.delta_tails.get([a1.id], [state.peer_json[a1.id]], [], trailer, bytes)
    assert again.endswith(b"null}") and tail.endswith(again)
    # Bob does not see alice's laptop: for him the same delta is a removal (SeenBy).
    doc_bob = json.loads(build.delta_json(state, bob.id, d))
    assert (doc_bob["peers_changed"], doc_bob["peers_removed"]) == ([], [a1.id])

    # The peer changes: the next delta carries its new record, not the cached tail.
    await state.update_node(a1.id, endpoints=["198.51.100.7:41641"], observed=None)
    doc = json.loads(build.delta_json(state, a2.id, Delta(changed={a1.id})))
    assert doc["peers_changed"][0]["endpoints"][0] == "198.51.100.7:41641"


async def test_servers_trailer_follows_the_server_list(tmp_path: Path) -> None:
    state = open_state(tmp_path)
    a1, a2 = await add(state, "laptop"), await add(state, "phone")
    before = json.loads(build.delta_json(state, a2.id, Delta(changed={a1.id})))["servers"]
    state.servers["other"] = {"urls": ["https://192.0.2.9:8443"]}
    state.servers_changed(state.stamp())
    after = json.loads(build.delta_json(state, a2.id, Delta(changed={a1.id})))["servers"]
    assert after == [*before, "https://192.0.2.9:8443"]
    assert json.loads(build.full_json(state, a2.id))["servers"] == after
