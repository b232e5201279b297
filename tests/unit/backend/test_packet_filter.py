"""The packet filter on the backend side: nftables JSON from the netmap's rules, the fail-safe
rule (no tunnels without their filter), the delta merge and the words `pcloud filter` prints.

nftables itself is exercised in the lab (tests/e2e/test_packet_filter.py), inside the virtual
hosts' namespaces; nothing here runs `nft` for real, so no test touches the machine's tables.
"""

from __future__ import annotations

from pathlib import Path

from pcloud.backend.cli.filter_words import summary, what, who
from pcloud.backend.config import BackendSettings
from pcloud.backend.filter import ruleset
from pcloud.backend.filter.enforcer import PacketFilter
from pcloud.backend.local import LocalBackend
from pcloud.backend.localapi.schemas import FilterStatus, Status
from pcloud.backend.netmap import apply_netmap
from pcloud.backend.persist import NodeInfo
from pcloud.backend.state import State
from pcloud.backend.wg.fake import FakeDriver
from pcloud.server.protocol import FilterRule, Netmap
from tests.unit.backend.test_netmap_apply import ME, full, peer

SSH = FilterRule(
    src=["10.0.0.2", "10.0.0.4/31"],
    proto=[6],
    ports=[(22, 22), (443, 443)],
    src_aliases=["group:ops"],
    why="acls[0]",
)
ANY = FilterRule(src=["*"], proto=[], ports=[(0, 65535)], src_aliases=["*"], why="default")
ICMP = FilterRule(src=["10.0.0.2"], proto=[1], ports=[(0, 65535)], why="acls[3]")


def rules_of(batch: list[dict]) -> list[list[dict]]:  # type: ignore[type-arg]
    return [
        c["add"]["rule"]["expr"]
        for c in batch
        if "rule" in c.get("add", {}) and c["add"]["rule"]["chain"] == ruleset.CHAIN
    ]


def test_batch_replaces_only_our_table_and_ends_in_drop() -> None:
    batch = ruleset.build([SSH, ANY, ICMP], "pcloud0")
    tables = {
        (c[op]["table"]["family"], c[op]["table"]["name"])
        for c in batch
        for op in c
        if "table" in c[op]
    }
    assert tables == {("inet", "pcloud")}
    assert [next(iter(c)) for c in batch[:3]] == ["add", "delete", "add"]  # one transaction
    exprs = rules_of(batch)
    assert exprs[0][-1] == {"accept": None}
    assert {"match": {"op": "==", "left": {"ct": {"key": "direction"}}, "right": "reply"}} in (
        exprs[0]
    )  # only replies to our own connections skip the rules
    assert exprs[-1] == [{"counter": None}, {"drop": None}]
    ssh = exprs[3]
    assert ssh[0]["match"]["right"] == {
        "set": ["10.0.0.2", {"prefix": {"addr": "10.0.0.4", "len": 31}}]
    }
    assert ssh[1]["match"]["right"] == 6 and ssh[2]["match"]["right"] == {"set": [22, 443]}
    # No proto: tcp and udp on the ports (all of them here: no port match), and ICMP.
    assert exprs[4] == [
        {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": {"set": [6, 17]}}},
        {"accept": None},
    ]
    assert exprs[5][0]["match"]["right"] == {"set": [1, 58]}
    # jump; reply/related/invalid; SSH 1, ANY 2 (tcp+udp, icmp), ICMP 1; the final drop
    assert ruleset.nft_rule_count(batch) == 1 + 3 + 4 + 1


def test_delete_only_names_our_table() -> None:
    assert ruleset.delete() == [
        {"add": {"table": {"family": "inet", "name": "pcloud"}}},
        {"delete": {"table": {"family": "inet", "name": "pcloud"}}},
    ]


def test_a_delta_keeps_the_held_filter_unless_it_brings_one() -> None:
    held = full(1, peer(2)).model_copy(update={"filter": [SSH]})
    same = apply_netmap(held, Netmap(version=2, full=False, self=ME, peers_removed=[9]))
    assert same.filter == [SSH]
    new = apply_netmap(held, Netmap(version=3, full=False, self=ME, filter=[ICMP]))
    assert new.filter == [ICMP]


async def test_no_tunnel_is_configured_without_its_filter(tmp_path: Path) -> None:
    settings = BackendSettings(state_dir=tmp_path, socket=tmp_path / "b.sock", hostname="h1")
    driver = FakeDriver()
    backend = LocalBackend(settings, driver)
    backend.store.ensure_dir()
    backend.node = NodeInfo(
        node_id=1,
        node_token="t",
        server_url="https://x/#fp=sha256:00",
        address="10.0.0.1",
        network="10.0.0.0/24",
        hostname="h1",
    )
    backend.netmap = full(1, peer(2), peer(3)).model_copy(update={"filter": [SSH]})
    backend.want_running = True
    await driver.start()
    # nftables cannot be run: the filter fails, and no peer gets configured.
    backend.engine.filter = PacketFilter("pcloud0", nft="pcloud-test-no-such-nft")
    await backend._apply()
    assert driver.config is not None and driver.config.peers == ()
    status = await backend.status()
    assert status.state == State.ERROR and status.filter.state == "failed"
    assert "not found: install the nftables package" in (status.error or "")
    assert "tunnels withheld" in (status.error or "")
    # Once the filter goes in, the peers follow.
    backend.engine.filter = PacketFilter("pcloud0", install=False)
    await backend._apply()
    assert len(driver.config.peers) == 2
    status = await backend.status()
    assert status.state == State.RUNNING
    assert (status.filter.state, status.filter.rules) == ("in_force", 1)


async def test_no_filter_from_the_server_is_said_plainly() -> None:
    pf = PacketFilter("pcloud0", install=False)
    assert await pf.apply(None) and pf.state == "none"
    assert "sends no filter" in summary(FilterStatus(state="none"))


def test_rules_in_policy_words() -> None:
    status = Status(
        state="Running",
        peers=[
            {**peer(2).model_dump(), "hostname": "laptop"},
            {**peer(5).model_dump(), "hostname": "rpi112"},
            {**peer(9).model_dump(), "hostname": "other"},
        ],
    )
    assert who(SSH, status) == "group:ops (laptop, rpi112)"
    assert who(ANY, status) == "* (any peer)"
    assert what(SSH) == "tcp 22, 443"
    assert what(ANY) == "tcp, udp all ports; icmp"
    assert what(ICMP) == "icmp"
    line = summary(FilterStatus(state="in_force", rules=3, nft_rules=9))
    assert line == "packet filter: in force, 3 rules (9 nftables rules)"
    line = summary(FilterStatus(state="in_force", rules=1, nft_rules=7))
    assert line == "packet filter: in force, 1 rule (7 nftables rules)"
    default = ANY.model_copy(update={"src_aliases": ["(any visible peer)"]})
    assert who(default, status) == "(any visible peer)"
