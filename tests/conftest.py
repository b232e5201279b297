"""Shared fixtures: the coordination server as a real HTTPS process on loopback (`coord`), or
its app in this process (`coord_app`, for API tests that need no real process)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.coord import CoordServer
from tests.support.inproc import CoordApp, app_client


@pytest.fixture
def coord(tmp_path: Path) -> Iterator[CoordServer]:
    server = CoordServer(tmp_path / "server").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def coord_app(tmp_path: Path) -> Iterator[CoordApp]:
    with app_client(tmp_path / "server") as app:
        yield app
