"""The resumable job runner: persistence, events, failure and resume, crash mid-step."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pcloud.backend.jobs.runner import (
    JobError,
    JobRunner,
    JobSpec,
    Step,
    StepContext,
    StepSkipped,
)

KEYS = {"id", "kind", "state", "steps", "error", "result"}


class Work:
    """Three steps that count their runs; the second fails while `fail` is set."""

    def __init__(self) -> None:
        self.runs = {"key": 0, "ca": 0, "admin": 0}
        self.fail = False

    async def key(self, ctx: StepContext) -> str:
        self.runs["key"] += 1
        ctx.data.setdefault("key", f"key-{self.runs['key']}")
        return "key pair ready"

    async def ca(self, ctx: StepContext) -> str | None:
        self.runs["ca"] += 1
        ctx.progress("making CA")
        if self.fail:
            raise RuntimeError("disk full")
        return None

    async def admin(self, ctx: StepContext) -> str:
        self.runs["admin"] += 1
        ctx.set_result(join_link=f"https://10.0.0.1:8443#{ctx.data['key']}")
        return f"admin for {ctx.params['user']}"

    def spec(self) -> JobSpec:
        return JobSpec(
            "install-server",
            [Step("key", self.key), Step("ca", self.ca), Step("admin", self.admin)],
        )


async def test_job_runs_to_done_with_events_and_result(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    runner = JobRunner(tmp_path, on_event=events.append)
    work = Work()
    job = runner.create(work.spec(), params={"user": "admin"})
    assert set(job) == KEYS
    assert job["state"] == "pending"
    assert [s["state"] for s in job["steps"]] == ["pending"] * 3
    final = await runner.run(job["id"], work.spec())
    assert set(final) == KEYS
    assert final["state"] == "done" and final["error"] is None
    assert final["steps"] == [
        {"name": "key", "state": "done", "detail": "key pair ready"},
        {"name": "ca", "state": "done", "detail": None},
        {"name": "admin", "state": "done", "detail": "admin for admin"},
    ]
    assert final["result"] == {"join_link": "https://10.0.0.1:8443#key-1"}
    # Every event is the public shape; progress was seen while the step ran.
    assert all(set(e) == KEYS for e in events)
    assert {"name": "ca", "state": "running", "detail": "making CA"} in [
        e["steps"][1] for e in events
    ]
    assert events[-1] == final
    path = tmp_path / "jobs" / f"{job['id']}.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert runner.get(job["id"]) == final
    # A done job run again does nothing.
    assert await runner.run(job["id"], work.spec()) == final
    assert work.runs == {"key": 1, "ca": 1, "admin": 1}


async def test_failed_job_resumes_at_the_failed_step(tmp_path: Path) -> None:
    runner = JobRunner(tmp_path)
    work = Work()
    work.fail = True
    job = runner.create(work.spec(), params={"user": "root"})
    failed = await runner.run(job["id"], work.spec())
    assert failed["state"] == "failed"
    assert failed["error"] == "ca: disk full"
    assert [s["state"] for s in failed["steps"]] == ["done", "failed", "pending"]
    assert failed["steps"][1]["detail"] == "disk full"
    work.fail = False
    # A new runner, as after a backend restart, reads the same file.
    done = await JobRunner(tmp_path).run(job["id"], work.spec())
    assert done["state"] == "done"
    assert work.runs == {"key": 1, "ca": 2, "admin": 1}
    assert done["result"] == {"join_link": "https://10.0.0.1:8443#key-1"}  # data survived


async def test_start_resumes_the_unfinished_job_instead_of_a_second_one(tmp_path: Path) -> None:
    runner = JobRunner(tmp_path)
    work = Work()
    work.fail = True
    first = runner.start(work.spec(), params={"user": "a"})
    assert (await runner.wait(first))["state"] == "failed"
    work.fail = False
    second = runner.start(work.spec(), params={"user": "b"})
    assert second == first
    final = await runner.wait(second)
    assert final["steps"][2]["detail"] == "admin for b"  # new params merged
    assert work.runs["key"] == 1
    assert runner.unfinished() == []
    third = runner.start(work.spec(), params={"user": "c"})
    assert third != first  # the old one is done, so this is a new job


async def test_skipped_step_and_cancellation(tmp_path: Path) -> None:
    runner = JobRunner(tmp_path)
    entered = asyncio.Event()

    async def skip(ctx: StepContext) -> str:
        raise StepSkipped("already registered")

    async def hang(ctx: StepContext) -> str:
        entered.set()
        await asyncio.Event().wait()
        return "never"

    spec = JobSpec("join-server", [Step("register", skip), Step("k3s", hang)])
    job_id = runner.start(spec)
    await entered.wait()
    runner._tasks[job_id].cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner._tasks[job_id]
    job = runner.get(job_id)
    assert job is not None
    assert job["steps"][0] == {
        "name": "register",
        "state": "skipped",
        "detail": "already registered",
    }
    assert job["steps"][1]["state"] == "failed" and job["state"] == "failed"
    assert job["error"] == "k3s: interrupted"


async def test_bad_ids_kinds_and_step_lists(tmp_path: Path) -> None:
    runner = JobRunner(tmp_path)
    work = Work()
    with pytest.raises(JobError):
        runner.get("../etc/passwd")
    with pytest.raises(JobError, match="unique"):
        runner.create(JobSpec("x", [Step("a", work.key), Step("a", work.key)]))
    job = runner.create(work.spec(), params={"user": "u"})
    with pytest.raises(JobError, match="not join-server"):
        await runner.run(job["id"], JobSpec("join-server", []))
    with pytest.raises(JobError, match="no job"):
        await runner.run("nope", work.spec())


def test_listener_errors_do_not_break_the_job(tmp_path: Path) -> None:
    def broken(job: dict[str, Any]) -> None:
        raise RuntimeError("subscriber gone")

    work = Work()
    runner = JobRunner(tmp_path, on_event=broken)
    job = runner.create(work.spec(), params={"user": "u"})
    assert asyncio.run(runner.run(job["id"], work.spec()))["state"] == "done"


CRASHING_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from pcloud.backend.jobs.runner import JobRunner, JobSpec, Step

    state = Path(sys.argv[1])
    counts = state / "counts"

    def count(name):
        with open(counts, "a") as f:
            f.write(name + "\\n")

    async def first(ctx):
        count("first")
        return "ok"

    async def second(ctx):
        count("second")
        print("IN-SECOND", flush=True)
        await asyncio.Event().wait()  # killed here

    spec = JobSpec("install-server", [Step("first", first), Step("second", second)])
    runner = JobRunner(state)
    job = runner.create(spec, job_id="crashy")
    asyncio.run(runner.run(job["id"], spec))
    """
)


def test_job_killed_mid_step_reruns_that_step(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CRASHING_CHILD, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        # Synchronise on the child's own word that it is inside the step.
        assert child.stdout.readline().strip() == "IN-SECOND"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=10)
    on_disk = json.loads((tmp_path / "jobs/crashy.json").read_text())
    assert on_disk["state"] == "running"
    assert [s["state"] for s in on_disk["steps"]] == ["done", "running"]

    runner = JobRunner(tmp_path)
    assert [j["id"] for j in runner.unfinished()] == ["crashy"]
    ran: list[str] = []

    async def first(ctx: StepContext) -> str:
        ran.append("first")
        return "ok"

    async def second(ctx: StepContext) -> str:
        ran.append("second")
        return "finished after the crash"

    spec = JobSpec("install-server", [Step("first", first), Step("second", second)])
    final = asyncio.run(runner.run("crashy", spec))
    assert final["state"] == "done"
    assert ran == ["second"]
    assert final["steps"][1] == {
        "name": "second",
        "state": "done",
        "detail": "finished after the crash",
    }
    assert (tmp_path / "counts").read_text().split() == ["first", "second"]
