"""The server's one door for changes: in-memory working set, write-through store, fan-out.

Every mutation is a `Plan` run by `transact`: built from the working set without touching it
(its ops), committed as one store transaction, then applied to memory, after which exactly the
nodes whose view changed get a log entry and a wake-up (netmap.broadcast). Reads never touch the
store. No other module builds store writes: they call the methods below.

`State` is built in layers, one module each, every layer using only the ones before it:

- working_set.py  the records in memory and their indexes (reads, committed records in)
- fanout.py       netmap versions and who hears of a change (`fanout`, `drop_node`,
                  `servers_changed`, `policy_applied`, `presence_changed`)
- transact.py     `Plan`, `transact` (commit, retry after a lost race, catch up), `load`
- nodes.py        register, log in again, update, delete nodes
- account_records.py  users, session tokens, auth keys
- cluster.py      the K3s record and the coordination servers' list (`publish_self`)
- policy.py       policy swaps;  replay.py: other servers' commits (the etcd watch)

Presence (who polls this server) is an object the state holds (presence.py); accounts and
their rules live in `accounts.py`, netmap answers in `netmap.build`.
"""

from __future__ import annotations

import datetime as dt

from ..config import Settings
from ..model import now
from ..presence import Presence
from ..store.base import Store
from .account_records import AccountRecords
from .cluster import K3S_KEY, ClusterRecords, K3sRecord
from .fanout import PreparedPolicy
from .nodes import server_owned
from .policy import PolicyChanges
from .replay import Replay
from .transact import RETRY_DEADLINE_S, CatchUp, Plan, store_unavailable
from .working_set import SERVER_PREFIX, facts

__all__ = [
    "K3S_KEY",
    "K3sRecord",
    "RETRY_DEADLINE_S",
    "SERVER_PREFIX",
    "CatchUp",
    "Plan",
    "PreparedPolicy",
    "State",
    "expired",
    "facts",
    "server_owned",
    "store_unavailable",
]


class State(AccountRecords, ClusterRecords, PolicyChanges, Replay):
    """One server's working set of the store, and every change to it (see the module doc)."""

    def __init__(self, settings: Settings, store: Store) -> None:
        presence = Presence(
            settings,
            nodes=lambda: self.nodes,
            changed=self.presence_changed,
            expire=self.delete_node,
        )
        super().__init__(settings, store, presence)
        self.load(store.load())

    # ---- presence (presence.py) -----------------------------------------------------------

    @property
    def online(self) -> set[int]:
        return self.presence.online

    def poll_started(self, node_id: int) -> None:
        self.presence.poll_started(node_id)

    def poll_ended(self, node_id: int) -> None:
        self.presence.poll_ended(node_id)

    def sweep_offline_ephemeral(self) -> None:
        """At start nobody is online: give every ephemeral node its offline timer."""
        self.presence.sweep()

    # ---- start and stop -------------------------------------------------------------------

    def close(self) -> None:
        self.presence.close()
        self.store.close()


def expired(at: dt.datetime) -> bool:
    return at <= now()
