"""The quorum rules remove-server and ha enable decide by (pure functions, no cluster)."""

from __future__ import annotations

import pytest

from pcloud.backend.ha.quorum import can_leave, ha_ready, majority


@pytest.mark.parametrize(("voters", "need"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)])
def test_majority(voters: int, need: int) -> None:
    assert majority(voters) == need


def test_three_healthy_servers_let_one_leave() -> None:
    verdict = can_leave("K3s's etcd", "rpi111", {"rpi111": True, "rpi112": True, "rpi113": True})
    assert verdict.ok
    assert "2 of 2 remaining" in verdict.reason


def test_one_remaining_member_down_refuses_and_names_it() -> None:
    verdict = can_leave(
        "PCloud's etcd", "rpi111", {"rpi111": True, "rpi112": True, "rpi113": False}
    )
    assert not verdict.ok
    assert "1 of 2 remaining" in verdict.reason and "2 are needed" in verdict.reason
    assert "rpi113" in verdict.reason and verdict.reason.startswith("PCloud's etcd")


def test_the_leaving_node_being_down_does_not_count_for_the_rest() -> None:
    # This node's own health is irrelevant: quorum is about what remains.
    assert can_leave("K3s's etcd", "a", {"a": False, "b": True, "c": True}).ok


def test_the_only_member_may_not_leave() -> None:
    verdict = can_leave("PCloud's etcd", "rpi111", {"rpi111": True})
    assert not verdict.ok and "only member" in verdict.reason


def test_a_non_member_has_nothing_to_lose() -> None:
    assert can_leave("K3s's etcd", "laptop", {"rpi111": True, "rpi112": False}).ok


def test_five_members_tolerate_one_more_down() -> None:
    healthy = {"a": True, "b": True, "c": True, "d": False, "e": True}
    assert can_leave("x", "a", healthy).ok  # 3 of 4 remaining, need 3
    healthy["e"] = False
    assert not can_leave("x", "a", healthy).ok  # 2 of 4 remaining


def test_ha_needs_three_servers_and_names_the_count() -> None:
    verdict = ha_ready({"rpi111": True, "rpi112": True})
    assert not verdict.ok and "the network has 2" in verdict.reason
    offline = ha_ready({"rpi111": True, "rpi112": True, "rpi113": False})
    assert not offline.ok and "rpi113" in offline.reason
    assert ha_ready({"rpi111": True, "rpi112": True, "rpi113": True}).ok
