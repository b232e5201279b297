"""The UI thread never blocks: while the backend holds its answer back, Qt timers keep firing."""

from __future__ import annotations

import asyncio
import time

from PySide6.QtCore import QTimer

from pcloud.gui.session import Session
from pcloud.gui.tray import Tray
from tests.unit.gui.conftest import fixture_json, run, until
from tests.unit.gui.fake_backend import FakeBackend

HOLD_S = 1.0
TICK_MS = 20


def test_timer_fires_while_connect_is_in_flight(
    loop: asyncio.AbstractEventLoop, backend: FakeBackend, session: Session
) -> None:
    backend.status = fixture_json("status_stopped.json")
    backend.route("POST", "/v1/up", lambda _b: (200, fixture_json("status_running.json")))
    backend.delays["/v1/up"] = HOLD_S
    tray = Tray(session)
    session.start()
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(TICK_MS)
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))

    async def scenario() -> None:
        await until(lambda: session.state == "Stopped", what="stopped")
        connect = next(a for a in tray.menu.actions() if a.data() == "connect")
        timer.start()
        started = time.monotonic()
        connect.trigger()  # returns at once; the request runs as a task
        assert time.monotonic() - started < 0.1
        assert session.busy
        greyed = next(a for a in tray.menu.actions() if a.data() == "connect")
        assert not greyed.isEnabled()  # no double submits while in flight
        await until(lambda: session.state == "Running", timeout=HOLD_S + 3, what="answer")
        timer.stop()
        elapsed = time.monotonic() - started
        assert elapsed >= HOLD_S * 0.9
        # A blocked UI thread would give ~0 ticks; allow slack for a loaded CI machine.
        assert len(ticks) >= (HOLD_S * 1000 / TICK_MS) * 0.5, len(ticks)
        gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
        assert max(gaps) < 0.25, max(gaps)
        assert not session.busy

    run(loop, scenario())
