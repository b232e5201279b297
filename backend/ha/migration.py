"""The ha-enable job's copy of the SQLite store into etcd, done by `pcloud-server migrate-to-etcd`.

The store's code belongs to the coordination server, so the backend runs the server's own
subcommand (the same Python, `-m pcloud.server`) rather than importing it, and reads what it
prints: a JSON object a line, `{"copied": N}` as it goes and `{"report": ...}` at the end.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pcloud.shared.etcd.member import MemberTls


class MigrationFailed(RuntimeError):
    """The copy was refused or its check failed; the message is the server's reason."""


@dataclass(frozen=True)
class Copied:
    """What the finished copy reported: records per kind, their SHA-256, whether it resumed."""

    records: int
    counts: dict[str, int]
    source_digest: str
    target_digest: str
    resumed: bool

    @classmethod
    def from_report(cls, report: dict[str, Any]) -> Copied:
        source, target = report["source"], report["target"]
        return cls(
            records=sum(int(v) for v in source["counts"].values()),
            counts={str(k): int(v) for k, v in target["counts"].items()},
            source_digest=str(source["digest"]),
            target_digest=str(target["digest"]),
            resumed=bool(report["resumed"]),
        )


def command(
    sqlite: Path, endpoints: Sequence[str], tls: MemberTls, *, replace_finished: bool
) -> list[str]:
    argv = [sys.executable, "-m", "pcloud.server", "migrate-to-etcd", "--sqlite", str(sqlite)]
    for url in endpoints:
        argv += ["--etcd-endpoint", url]
    argv += ["--etcd-ca", str(tls.ca), "--etcd-cert", str(tls.cert), "--etcd-key", str(tls.key)]
    return argv + (["--replace-finished"] if replace_finished else [])


async def migrate_to_etcd(
    sqlite: Path,
    endpoints: Sequence[str],
    tls: MemberTls,
    progress: Callable[[int], None],
    *,
    replace_finished: bool = True,
) -> Copied:
    """Run the copy; `progress(records written so far)` after each transaction."""
    argv = command(sqlite, endpoints, tls, replace_finished=replace_finished)
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    report: dict[str, Any] | None = None
    stderr = asyncio.ensure_future(proc.stderr.read())  # read alongside: a full pipe would block
    try:
        async for raw in proc.stdout:
            line = json.loads(raw)
            if "copied" in line:
                progress(int(line["copied"]))
            report = line.get("report", report)
        errors = (await stderr).decode(errors="replace").strip()
        code = await proc.wait()
    finally:
        if proc.returncode is None:  # cancelled: the copy is resumable, so stopping is safe
            proc.kill()
            await proc.wait()
        stderr.cancel()
    if code != 0 or report is None:
        raise MigrationFailed(errors.splitlines()[-1] if errors else f"exit code {code}")
    return Copied.from_report(report)
