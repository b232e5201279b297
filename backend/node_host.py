"""What the server-role code (ha/, jobs, the coordination calls they make) may read of the
backend: a narrow `NodeHost` protocol instead of the whole `LocalBackend`.

`LocalBackend` satisfies it; tests hand in any object with these attributes. Keeping the
protocol here, in the core, is what lets `ha/` and `jobs/` be imported by `local` without
importing it back (the 7-module circle of issue 13).
"""

from __future__ import annotations

from typing import Protocol

from pcloud.backend.config import BackendSettings
from pcloud.backend.persist import NodeInfo, Store
from pcloud.backend.server_supervisor import Services
from pcloud.server.protocol import Netmap


class NodeHost(Protocol):
    """This device as the network knows it, and the daemons it keeps running."""

    @property
    def settings(self) -> BackendSettings: ...

    @property
    def store(self) -> Store: ...

    @property
    def services(self) -> Services: ...

    @property
    def node(self) -> NodeInfo | None:
        """Our registration (None while logged out)."""

    @property
    def netmap(self) -> Netmap | None:
        """The last netmap from the coordination server (None before the first)."""
