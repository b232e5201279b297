"""This machine as a server of the network: the long jobs (install-server, join-server, ha,
remove-server), the daemons they leave running (coordination server, etcd, K3s) and the one K3s
driver. Jobs see the backend only as a `JobHost`; at start the daemons are supervised again."""

from __future__ import annotations

from pcloud.backend.config import BackendSettings
from pcloud.backend.events import Event, EventBus
from pcloud.backend.jobs import ha_enable
from pcloud.backend.jobs.host import JobHost
from pcloud.backend.jobs.install_server import resume_services
from pcloud.backend.jobs.runner import JobRunner
from pcloud.backend.k3s.driver import K3sDriver
from pcloud.backend.server_supervisor import Services


class ServerRole:
    """Jobs, services and the K3s driver of this machine."""

    def __init__(self, settings: BackendSettings, bus: EventBus) -> None:
        self._bus = bus
        self.k3s: K3sDriver | None = None  # made by the first job that needs it
        self.jobs = JobRunner(settings.state_dir, on_event=self._job_event)
        self.services = Services(
            settings.state_dir, system_root=settings.system_root,
            manager=settings.service_manager,
        )  # fmt: skip

    def _job_event(self, job: dict[str, object]) -> None:
        self._bus.publish(Event("job", dict(job)))

    async def resume(self, host: JobHost) -> None:
        """Supervise again what the jobs left running: our etcd member first, then the
        coordination server that uses it, and K3s."""
        await ha_enable.resume(host)
        await resume_services(host)
