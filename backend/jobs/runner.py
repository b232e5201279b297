"""Runs long jobs (install-server, join-server, ...) as named steps that survive crashes.

A job is a kind plus an ordered list of steps; each step is an idempotent async function. After
every change (job started, step started, progress, step finished or failed) the job is written
as JSON (0600, atomically) to STATE_DIR/jobs/<id>.json and handed to `on_event` as the
local-API job dict `{id, kind, state, steps: [{name, state, detail}], error, result}`.

Resuming is the point: running a job again skips its finished steps and reruns the first
unfinished one, whether it failed, was interrupted, or was left "running" by a process that
died mid-step (the file says so after a crash or reboot). Steps must therefore be idempotent:
they check what exists before creating it. What a step needs to hand to later steps goes into
`ctx.data`, which is persisted with the job, so a resumed step sees what earlier runs produced.
`start()` resumes an unfinished job of the same kind instead of creating a second one, so
pressing "install" twice never makes a second key, CA or admin.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pcloud.backend.persist import atomic_write

log = logging.getLogger(__name__)

JobDict = dict[str, Any]
OnEvent = Callable[[JobDict], None]

PENDING, RUNNING, DONE, FAILED, SKIPPED = "pending", "running", "done", "failed", "skipped"
_FINISHED = (DONE, SKIPPED)
_PUBLIC = ("id", "kind", "state", "steps", "error", "result")


class StepSkipped(Exception):  # noqa: N818 - it is a signal, not an error
    """Raised by a step that finds nothing to do; the step is shown as skipped."""


class JobError(RuntimeError):
    """A job that does not exist or cannot run as asked."""


@dataclass(frozen=True)
class Step:
    """One named, idempotent unit of work. It returns the detail to show, or None."""

    name: str
    run: Callable[[StepContext], Awaitable[str | None]]


@dataclass(frozen=True)
class JobSpec:
    """What a kind of job does: its steps in order."""

    kind: str
    steps: Sequence[Step]


class StepContext:
    """What a running step may read and write. Everything here is persisted with the job."""

    def __init__(self, runner: JobRunner, job: dict[str, Any], index: int) -> None:
        self._runner = runner
        self._job = job
        self._index = index

    @property
    def job_id(self) -> str:
        return str(self._job["id"])

    @property
    def params(self) -> dict[str, Any]:
        """The job's inputs, as given to create()/start()."""
        params: dict[str, Any] = self._job["params"]
        return params

    @property
    def data(self) -> dict[str, Any]:
        """Scratch space shared by the steps (JSON values), saved after each step."""
        data: dict[str, Any] = self._job["data"]
        return data

    def progress(self, detail: str) -> None:
        """Show `detail` on the running step now (persisted and emitted)."""
        self._job["steps"][self._index]["detail"] = detail
        self._runner._save(self._job)

    def set_result(self, **values: Any) -> None:
        """Add to the job's result (the caller sees it when the job is done)."""
        result = self._job.get("result") or {}
        result.update(values)
        self._job["result"] = result
        self._runner._save(self._job)


def public(job: Mapping[str, Any]) -> JobDict:
    """The job as the local API shows it (no params, no scratch data)."""
    out = {k: job.get(k) for k in _PUBLIC}
    out["steps"] = [dict(s) for s in job["steps"]]
    out["result"] = dict(job["result"]) if job.get("result") is not None else None
    return out


class JobRunner:
    """Creates, persists, runs and resumes jobs in `state_dir/jobs`."""

    def __init__(self, state_dir: Path, on_event: OnEvent | None = None) -> None:
        self.dir = state_dir / "jobs"
        self.on_event = on_event
        self._tasks: dict[str, asyncio.Task[JobDict]] = {}

    # -- reading -------------------------------------------------------------------------------

    def _path(self, job_id: str) -> Path:
        if not job_id or not all(c.isalnum() or c in "-_" for c in job_id):
            raise JobError(f"bad job id {job_id!r}")
        return self.dir / f"{job_id}.json"

    def _load(self, job_id: str) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] = json.loads(self._path(job_id).read_text())
        except FileNotFoundError:
            return None
        return doc

    def get(self, job_id: str) -> JobDict | None:
        """The job dict, or None if there is no such job."""
        job = self._load(job_id)
        return public(job) if job is not None else None

    def jobs(self) -> list[JobDict]:
        """Every job on disk, oldest first."""
        if not self.dir.is_dir():
            return []
        jobs = []
        for p in self.dir.glob("*.json"):
            try:
                jobs.append(json.loads(p.read_text()))
            except (OSError, json.JSONDecodeError) as exc:
                log.warning("ignoring unreadable job file %s: %s", p, exc)
        jobs.sort(key=lambda j: (j.get("created", 0), j["id"]))
        return [public(j) for j in jobs]

    def unfinished(self, kind: str | None = None) -> list[JobDict]:
        """Jobs not done (pending, failed, or left running by a crash), oldest first."""
        return [
            j for j in self.jobs() if j["state"] != DONE and (kind is None or j["kind"] == kind)
        ]

    def running(self, job_id: str) -> bool:
        """True while this runner has the job's task in flight."""
        task = self._tasks.get(job_id)
        return task is not None and not task.done()

    # -- writing -------------------------------------------------------------------------------

    def _save(self, job: dict[str, Any]) -> None:
        job["updated"] = time.time()
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(self._path(job["id"]), json.dumps(job, indent=1).encode())
        if self.on_event is not None:
            try:
                self.on_event(public(job))
            except Exception:  # a broken listener must not break the job
                log.exception("job event listener failed")

    def create(
        self, spec: JobSpec, *, params: Mapping[str, Any] | None = None, job_id: str | None = None
    ) -> JobDict:
        """A new pending job of `spec.kind` (persisted, not started)."""
        names = [s.name for s in spec.steps]
        if len(set(names)) != len(names):
            raise JobError(f"{spec.kind}: step names must be unique")
        job_id = job_id or secrets.token_hex(8)
        if self._load(job_id) is not None:
            raise JobError(f"job {job_id} exists")
        job: dict[str, Any] = {
            "id": job_id,
            "kind": spec.kind,
            "state": PENDING,
            "steps": [{"name": n, "state": PENDING, "detail": None} for n in names],
            "error": None,
            "result": None,
            "params": dict(params or {}),
            "data": {},
            "created": time.time(),
        }
        self._save(job)
        return public(job)

    def start(self, spec: JobSpec, *, params: Mapping[str, Any] | None = None) -> str:
        """Run a job of this kind in the background and return its id.

        An unfinished job of the same kind is resumed (with `params` merged over its own)
        rather than a second one created; one already in flight is left alone."""
        previous = self.unfinished(spec.kind)
        if previous:
            job_id = str(previous[-1]["id"])
            if params:
                job = self._load(job_id)
                assert job is not None
                job["params"].update(params)
                self._save(job)
        else:
            job_id = str(self.create(spec, params=params)["id"])
        if not self.running(job_id):
            self._tasks[job_id] = asyncio.create_task(self.run(job_id, spec), name=f"job-{job_id}")
        return job_id

    async def wait(self, job_id: str) -> JobDict:
        """The job dict once its background run has ended."""
        task = self._tasks.get(job_id)
        if task is not None:
            return await asyncio.shield(task)
        job = self.get(job_id)
        if job is None:
            raise JobError(f"no job {job_id}")
        return job

    # -- running -------------------------------------------------------------------------------

    async def run(self, job_id: str, spec: JobSpec) -> JobDict:
        """Run (or resume) the job to the end; return its final dict. Never raises for a
        failing step: the failure is in the dict. Cancellation marks it interrupted."""
        job = self._load(job_id)
        if job is None:
            raise JobError(f"no job {job_id}")
        if job["kind"] != spec.kind:
            raise JobError(f"job {job_id} is a {job['kind']} job, not {spec.kind}")
        if job["state"] == DONE:
            return public(job)
        # Keep the progress of steps that still exist (by name) if the step list changed.
        old = {s["name"]: s for s in job["steps"]}
        job["steps"] = [
            old.get(s.name, {"name": s.name, "state": PENDING, "detail": None}) for s in spec.steps
        ]
        job["state"], job["error"] = RUNNING, None
        self._save(job)
        for index, step in enumerate(spec.steps):
            entry = job["steps"][index]
            if entry["state"] in _FINISHED:
                continue
            if entry["state"] == RUNNING:
                log.info("job %s: step %s was interrupted; running it again", job_id, step.name)
            entry["state"], entry["detail"] = RUNNING, None
            self._save(job)
            try:
                detail = await step.run(StepContext(self, job, index))
            except StepSkipped as skip:
                entry["state"], entry["detail"] = SKIPPED, str(skip) or None
            except asyncio.CancelledError:
                entry["state"], entry["detail"] = FAILED, "interrupted"
                job["state"], job["error"] = FAILED, f"{step.name}: interrupted"
                self._save(job)
                raise
            except Exception as exc:
                log.warning("job %s: step %s failed: %s", job_id, step.name, exc)
                message = str(exc) or type(exc).__name__
                entry["state"], entry["detail"] = FAILED, message
                job["state"], job["error"] = FAILED, f"{step.name}: {message}"
                self._save(job)
                return public(job)
            else:
                entry["state"], entry["detail"] = DONE, detail
            self._save(job)
        job["state"] = DONE
        self._save(job)
        return public(job)
