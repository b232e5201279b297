"""Pure parts of the server's limits: login budgets with backoff, the address reserve for
servers, the policy document's nesting and size limits."""

from __future__ import annotations

import ipaddress
import json

import pytest

from pcloud.server.api.policy_work import check_counts, check_depth
from pcloud.server.errors import ApiError
from pcloud.server.ipam import Exhausted, Ipam
from pcloud.server.security.ratelimit import Budget, LoginLimiter


def test_budget_blocks_with_doubling_backoff_and_success_clears() -> None:
    b = Budget(3, window_s=10)
    for _ in range(3):
        assert b.blocked("k") == 0
        b.failed("k")
    first = b.blocked("k")
    assert 9 < first <= 10
    b._until["k"] = 0  # the block ran out (no waiting in a unit test)
    for _ in range(3):
        b.failed("k")
    assert 19 < b.blocked("k") <= 20  # second strike: twice as long
    b.succeeded("k")
    assert b.blocked("k") == 0


def test_limiter_names_the_budget_that_ran_out() -> None:
    lim = LoginLimiter(per_pair=100, per_user=100, per_source=3)
    for user in ("a", "b", "c"):
        lim.failed(user, "198.51.100.7")
    wait, what = lim.blocked("d", "198.51.100.7")
    assert wait > 0 and what == "this address"
    assert lim.blocked("d", "198.51.100.8") == (0.0, "")


def test_clients_leave_the_reserve_to_servers() -> None:
    ipam = Ipam(ipaddress.ip_network("10.0.0.0/28"), [])  # 14 usable addresses
    got = []
    with pytest.raises(Exhausted, match="kept for server-role nodes"):
        while True:
            got.append(ipam.allocate(server=False, reserve=3))
    assert len(got) == 14 - 1 - 3 and "10.0.0.1" not in got
    servers = [ipam.allocate(server=True, reserve=3) for _ in range(4)]
    assert servers[0] == "10.0.0.1" and len(set(servers)) == 4
    with pytest.raises(Exhausted):
        ipam.allocate(server=True, reserve=3)


def test_policy_depth_scan_skips_strings_and_comments() -> None:
    deep = "[" * 40
    check_depth('{"a": "' + deep + '", // ' + deep + "\n /* " + deep + " */ 'b': [[1]]}")
    with pytest.raises(ApiError, match="deeper than 32"):
        check_depth("[" * 33 + "]" * 33)


def test_policy_counts() -> None:
    rule = {"action": "accept", "src": ["*"], "dst": ["*:*"]}
    check_counts(json.dumps({"acls": [rule] * 1000}))
    with pytest.raises(ApiError, match="1001 acls"):
        check_counts(json.dumps({"acls": [rule] * 1001}))
    wide = {
        "action": "accept",
        "src": [f"10.0.{i // 250}.{i % 250}" for i in range(30)],
        "dst": ["*:*"],
    }
    with pytest.raises(ApiError, match="aliases"):
        check_counts(json.dumps({"acls": [wide] * 700}))
