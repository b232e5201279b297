"""`JobHost`: what a long job (install-server, join-server, ha, remove-server) may use of the
backend, on top of `NodeHost`. The jobs take this instead of the whole `LocalBackend`."""

from __future__ import annotations

from typing import Protocol

from pcloud.backend.events import EventBus
from pcloud.backend.jobs.runner import JobRunner
from pcloud.backend.k3s.driver import K3sDriver
from pcloud.backend.node_host import NodeHost
from pcloud.backend.state import State
from pcloud.server.protocol import ProofPurpose, RegisterAnswer


class JobHost(NodeHost, Protocol):
    """The backend as a job sees it: its facts, events, job runner and the one K3s driver."""

    # The one K3sDriver of this machine, made by the first job that needs it (two drivers
    # would each supervise, and restart, the same K3s).
    k3s: K3sDriver | None

    @property
    def bus(self) -> EventBus: ...

    @property
    def jobs(self) -> JobRunner: ...

    @property
    def state(self) -> State: ...

    @property
    def public_key(self) -> str: ...

    async def adopt_registration(self, server_url: str, ca: str, answer: RegisterAnswer) -> None:
        """Use a registration made elsewhere (the server's admin socket) as a login would."""

    async def key_proof(self, server: str, purpose: ProofPurpose) -> str:
        """A proof of our WireGuard key for `server`."""
