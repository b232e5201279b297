"""The rules for removing a server without losing either etcd cluster (K3s's and ours).

Pure functions over what the jobs observed, so the rules are tested without a cluster. Both
stores are raft clusters: a cluster of N voters needs floor(N/2) + 1 of them to commit. Removing
this server is a membership change of the cluster it belongs to (it needs quorum of the current
N, which this healthy member helps to reach) and leaves N - 1 voters, of which floor((N-1)/2) + 1
must be healthy *without this node*, or the store stops taking writes the moment it leaves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


def majority(voters: int) -> int:
    """Voters a raft cluster of `voters` members needs to commit."""
    return voters // 2 + 1


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str  # why not, or what holds


def can_leave(store: str, me: str, healthy: Mapping[str, bool]) -> Verdict:
    """May `me` leave `store`, whose voters are `healthy`'s keys (True = serving)?

    `me` absent from `healthy` means this node is no member: nothing to lose."""
    if me not in healthy:
        return Verdict(True, f"{store}: this server is no member")
    others = {name: ok for name, ok in healthy.items() if name != me}
    if not others:
        return Verdict(
            False,
            f"{store}: this is its only member; the network would lose it "
            "(add servers and enable HA first)",
        )
    alive = sorted(name for name, ok in others.items() if ok)
    down = sorted(name for name, ok in others.items() if not ok)
    need = majority(len(others))
    if len(alive) < need:
        shown = ", ".join(down) or "none"
        return Verdict(
            False,
            f"{store}: without this server {len(alive)} of {len(others)} remaining members "
            f"are healthy and {need} are needed for quorum (down: {shown})",
        )
    return Verdict(
        True, f"{store}: {len(alive)} of {len(others)} remaining members healthy (need {need})"
    )


def ha_ready(server_hosts: Mapping[str, bool]) -> Verdict:
    """May HA be enabled: at least three server-role nodes, all online (name -> online)?"""
    online = sorted(n for n, up in server_hosts.items() if up)
    offline = sorted(n for n, up in server_hosts.items() if not up)
    if len(server_hosts) < 3:
        return Verdict(
            False,
            f"HA needs 3 servers, the network has {len(server_hosts)} "
            f"({', '.join(sorted(server_hosts)) or 'none'}): add servers with "
            "`pcloud join-server` first",
        )
    if offline:
        return Verdict(False, f"servers offline: {', '.join(offline)}; bring them online first")
    return Verdict(True, f"{len(online)} servers online: {', '.join(online)}")
