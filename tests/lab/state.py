"""The kept-lab state file (`/tmp/pcloud-lab/current.json`) shared by `Lab(keep=True)`,
`python -m tests.lab.shell` and `python -m tests.lab.down`.

It records PIDs and namespace names only; the tools that read it re-check that each PID still
lives in one of the recorded namespaces before signalling it, so a stale file cannot make them
kill an unrelated process that reused a PID.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DEFAULT_BASE = Path(os.environ.get("PCLOUD_LAB_DIR", "/tmp/pcloud-lab"))
STATE_NAME = "current.json"


def state_path(base: Path = DEFAULT_BASE) -> Path:
    return base / STATE_NAME


def write(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(path)


def read(path: Path) -> dict[str, Any]:
    """Load the state file; raise SystemExit with a readable message when there is none."""
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"no kept lab: {path} does not exist") from None
    return data


def remove_if_run(path: Path, run_id: str) -> None:
    """Delete the state file only when it describes `run_id` (another lab may own it now)."""
    try:
        if json.loads(path.read_text()).get("run_id") == run_id:
            path.unlink()
    except (OSError, ValueError):
        pass
