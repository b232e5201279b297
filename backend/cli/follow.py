"""Following a job in the terminal: a line per finished step, a spinner while a step works.

The job's progress comes from the backend's event stream (no polling); the current state is
read once after subscribing so nothing that happened before is missed. The exit code is
non-zero when the job fails, and the message names the failed step.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console

from pcloud.backend.cli.common import CliError
from pcloud.backend.localapi.client import LocalClient
from pcloud.backend.localapi.schemas import Job, JobEvent

MARKS = {"done": "[green]✓[/green]", "skipped": "[dim]-[/dim]", "failed": "[red]✗[/red]"}


class StepPrinter:
    """Prints each step once, when it reaches a final state; shows the running one live."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.printed: set[str] = set()
        self.status: Any = None

    def show(self, job: Job) -> None:
        for step in job.steps:
            if step.state in MARKS and step.name not in self.printed:
                self.printed.add(step.name)
                detail = f" [dim]{step.detail}[/dim]" if step.detail else ""
                self.console.print(f"{MARKS[step.state]} {step.name}{detail}", highlight=False)
        running = next((s for s in job.steps if s.state == "running"), None)
        if running is not None and job.state == "running":
            text = f"[bold]{running.name}[/bold]" + (f" {running.detail}" if running.detail else "")
            if self.status is None:
                self.status = self.console.status(text)
                self.status.start()
            else:
                self.status.update(text)
        elif self.status is not None:
            self.stop()

    def stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


async def follow(client: LocalClient, job_id: str, console: Console | None = None) -> Job:
    """Render the job until it is done or failed; return its last state."""
    console = console or Console(stderr=False, width=None if sys.stdout.isatty() else 120)
    printer = StepPrinter(console)
    job: Job | None = None
    events = client.events()
    try:
        async for event in events:
            if job is None:
                # Subscribed (the first event is the status): now the current job state.
                job = await client.job(job_id)
                printer.show(job)
            elif isinstance(event, JobEvent) and event.job.id == job_id:
                job = event.job
                printer.show(job)
            if job.state in ("done", "failed"):
                break
    finally:
        printer.stop()
        await events.aclose()
    if job is None:
        raise CliError("the backend closed its event stream before the job ended")
    return job


def failure(kind: str, job: Job) -> CliError:
    failed = next((s for s in job.steps if s.state == "failed"), None)
    step = failed.name if failed else "?"
    why = (failed.detail if failed else None) or job.error or "unknown error"
    if f"`pcloud {kind}`" in why:
        # The step already says where to run it ("on the first server"): "again" would contradict.
        return CliError(f"{kind} failed at step {step!r}: {why}")
    return CliError(f"{kind} failed at step {step!r}: {why}; run `pcloud {kind}` again to resume")
