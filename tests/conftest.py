"""Shared fixtures: a real coordination server over HTTPS on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.coord import CoordServer


@pytest.fixture
def coord(tmp_path: Path) -> Iterator[CoordServer]:
    server = CoordServer(tmp_path / "server").start()
    try:
        yield server
    finally:
        server.stop()
