"""The real tray under Xvfb with a tray host (trayer): the screenshot script opens the menu from
the icon and captures it, and every documented screenshot comes out."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

EXPECTED = [
    "admin-install.png",
    "admin-page.png",
    "login-error.png",
    "main-window.png",
    "tray-menu.png",
    "wizard-done.png",
    "wizard-failed.png",
    "wizard-progress.png",
]


@pytest.mark.skipif(
    not (shutil.which("Xvfb") and shutil.which("trayer")), reason="needs Xvfb and trayer"
)
def test_tray_and_screenshots(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "QT_QPA_PLATFORM")}
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.screenshots", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.glob("*.png")) == EXPECTED
    assert all((tmp_path / name).stat().st_size > 5000 for name in EXPECTED)
