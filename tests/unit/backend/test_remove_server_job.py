"""remove-server without a lab: refused with the reason when quorum would be lost (or when this
server holds the only store), and resumable: a run that fails midway and is run again repeats
none of the finished steps (no second drain, delete or member removal)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pcloud.backend.config import BackendSettings
from pcloud.backend.jobs import remove_server
from pcloud.backend.jobs.runner import JobRunner
from pcloud.backend.k3s.driver import Node
from pcloud.backend.server_supervisor import Services
from pcloud.shared.etcd.cluster import MemberInfo

SERVER_ROLES = ["control-plane", "etcd", "master"]


class FakeDriver:
    def __init__(self, ready: dict[str, bool]) -> None:
        self.ready = dict(ready)
        self.calls: list[str] = []
        self.fail_uninstall = 1  # the first uninstall fails: the job must resume after it

    async def nodes(self) -> list[Node]:
        return [Node(n, ok, None, SERVER_ROLES) for n, ok in self.ready.items()]

    async def drain(self, node: str) -> None:
        self.calls.append(f"drain {node}")

    async def delete_node(self, node: str) -> None:
        self.calls.append(f"delete {node}")
        self.ready.pop(node)

    async def uninstall(self, role: str = "server") -> None:
        if self.fail_uninstall:
            self.fail_uninstall -= 1
            raise RuntimeError("disk full")
        self.calls.append("uninstall")


class FakeAdmin:
    def __init__(self, log: list[str], members: list[MemberInfo]) -> None:
        self.log, self._members = log, members

    def members(self) -> list[MemberInfo]:
        return list(self._members)

    def remove(self, member_id: str) -> None:
        self.log.append(f"remove {member_id}")
        self._members[:] = [m for m in self._members if m.id != member_id]

    def close(self) -> None:
        pass


def member(name: str, n: int, *, learner: bool = False) -> MemberInfo:
    return MemberInfo(
        str(n), name, (f"https://10.0.0.{n}:2480",), (f"https://10.0.0.{n}:2479",), learner
    )


@pytest.fixture
def job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    settings = BackendSettings(state_dir=tmp_path, hostname="rpi111", system_root=tmp_path)
    services = Services(tmp_path, manager="child")
    node = SimpleNamespace(address="10.0.0.1", node_token="t")
    backend = SimpleNamespace(
        settings=settings, services=services, node=node, netmap=None, k3s=None, bus=None
    )
    rs = remove_server.RemoveServer(backend)  # type: ignore[arg-type]
    driver = FakeDriver({"rpi111": True, "rpi112": True, "rpi113": True})
    log: list[str] = []
    members = [member("rpi111", 1), member("rpi112", 2), member("rpi113", 3)]
    health = {"rpi111": True, "rpi112": True, "rpi113": True}
    rs.driver = lambda: driver  # type: ignore[method-assign]
    rs.member.save(argv=["etcd"], store="etcd", endpoints=["https://10.0.0.1:2479"])

    async def members_of(endpoints: list[str]) -> list[MemberInfo]:
        return list(members)

    async def health_of(endpoints: list[str]) -> dict[str, bool]:
        return dict(health)

    async def stop() -> None:
        log.append("stop member")

    async def stop_server(*, forget: bool = False) -> None:
        log.append(f"stop server forget={forget}")

    answers: dict[str, Any] = {}

    async def call_any(backend: Any, method: str, path: str, **kw: Any) -> Any:
        log.append(f"{method} {path}")
        if "avoid" in kw:
            log.append(f"avoid {kw['avoid']}")
        return answers.pop(f"{method} {path}", None)

    monkeypatch.setattr(rs.member, "members", members_of)
    monkeypatch.setattr(rs.member, "health", health_of)
    monkeypatch.setattr(rs.member, "admin", lambda endpoints: FakeAdmin(log, members))
    monkeypatch.setattr(rs.member, "stop", stop)
    monkeypatch.setattr(services, "stop_server", stop_server)
    monkeypatch.setattr(remove_server, "call_any", call_any)
    services._save(server_argv=["pcloud-server", "--listen", "192.168.0.111:8443"])
    return SimpleNamespace(
        rs=rs,
        driver=driver,
        log=log,
        health=health,
        runner=JobRunner(tmp_path),
        services=services,
        answers=answers,
    )


async def test_refused_when_the_remaining_k3s_servers_lose_quorum(job: Any) -> None:
    job.driver.ready["rpi113"] = False
    done = await job.runner.run(job.runner.create(job.rs.spec())["id"], job.rs.spec())
    assert done["state"] == "failed"
    assert "K3s's etcd" in done["error"] and "rpi113" in done["error"]
    assert job.driver.calls == [] and job.log == []  # nothing was touched


async def test_refused_when_our_etcd_would_lose_quorum(job: Any) -> None:
    job.health["rpi112"] = False
    done = await job.runner.run(job.runner.create(job.rs.spec())["id"], job.rs.spec())
    assert done["state"] == "failed" and "PCloud's etcd" in done["error"]
    assert "rpi112" in done["error"] and job.driver.calls == []


async def test_refused_on_the_server_holding_the_only_sqlite_store(job: Any) -> None:
    job.rs.member.save(store=None)
    done = await job.runner.run(job.runner.create(job.rs.spec())["id"], job.rs.spec())
    assert done["state"] == "failed" and "SQLite" in done["error"]


async def test_resumes_after_a_failed_step_without_repeating_finished_ones(job: Any) -> None:
    spec = job.rs.spec()
    job_id = job.runner.create(spec, params={"demote": False})["id"]
    first = await job.runner.run(job_id, spec)
    assert first["state"] == "failed" and first["error"] == "K3s uninstalled: disk full"
    assert job.driver.calls == ["drain rpi111", "delete rpi111"]
    assert "remove 1" in job.log and "stop server forget=True" in job.log
    again = await job.runner.run(job_id, spec)
    assert again["state"] == "done"
    # Each effect exactly once over both runs.
    assert job.driver.calls == ["drain rpi111", "delete rpi111", "uninstall"]
    assert job.log.count("remove 1") == 1 and job.log.count("stop server forget=True") == 1
    assert job.log.count("POST /cluster/k3s/withdraw") == 1
    assert job.log.count("DELETE /cluster/servers/self") == 1
    states = {s["name"]: s["state"] for s in again["steps"]}
    assert states["demoted"] == "skipped" and states["left our etcd"] == "done"
    assert job.rs.member.load()["argv"] is None  # a restarted backend starts no member


async def test_a_rerun_after_success_finds_nothing_left_to_do(job: Any) -> None:
    job.driver.fail_uninstall = 0
    spec = job.rs.spec()
    assert (await job.runner.run(job.runner.create(spec)["id"], spec))["state"] == "done"
    # A second remove-server (a new job): every step sees its fact already true.
    job.services._save(server_argv=None)
    second = await job.runner.run(job.runner.create(spec)["id"], spec)
    states = {s["name"]: s["state"] for s in second["steps"]}
    assert states["drained"] == states["K3s node deleted"] == "skipped"
    assert states["left our etcd"] == states["coordination server stopped"] == "skipped"
    assert job.driver.calls.count("drain rpi111") == 1


async def test_the_stopped_server_withdraws_its_record_and_a_rerun_repairs_a_leftover(
    job: Any,
) -> None:
    job.driver.fail_uninstall = 0
    url = "https://192.168.0.111:8443"
    job.answers["DELETE /cluster/servers/self"] = {"withdrawn": [url]}
    spec = job.rs.spec()
    done = await job.runner.run(job.runner.create(spec)["id"], spec)
    assert done["state"] == "done"
    # Stopped first, then withdrawn through another server than its own.
    stop = job.log.index("stop server forget=True")
    assert job.log[stop + 1 :][:2] == ["DELETE /cluster/servers/self", f"avoid {[url]}"]
    step = next(s for s in done["steps"] if s["name"] == "coordination server stopped")
    assert "withdrawn from the netmaps' server list" in step["detail"]
    # A new job with the server already stopped still withdraws a record left behind...
    job.services._save(server_argv=None)
    job.answers["DELETE /cluster/servers/self"] = {"withdrawn": [url]}
    second = await job.runner.run(job.runner.create(spec)["id"], spec)
    step = next(s for s in second["steps"] if s["name"] == "coordination server stopped")
    assert step["state"] == "done" and url in step["detail"]
    # ...and skips once there is none.
    third = await job.runner.run(job.runner.create(spec)["id"], spec)
    step = next(s for s in third["steps"] if s["name"] == "coordination server stopped")
    assert step["state"] == "skipped"
