"""The errors of a store, raised by the server's stores and by the shared etcd client alike.

They live here, not in the server, because the etcd gateway client that raises them is shared
with the backend's HA jobs; `pcloud.server.store.base` re-exports them for the server's code.
"""

from __future__ import annotations


class StoreError(Exception):
    """The store could not complete a transaction; nothing of it was applied."""


class Unavailable(StoreError):
    """No replica could take the transaction (no quorum, every endpoint down or timing out).

    The outcome is unknown: the write may still be applied once quorum returns (etcd keeps the
    proposal in the leader's log). The server answers 503, keeps serving reads from memory and
    resynchronises (reload, or the watch) before trusting its view for the next change.
    """
