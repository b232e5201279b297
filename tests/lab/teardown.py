"""Make sure a lab is torn down however the test process ends.

While a lab is up, SIGINT and SIGTERM first tear it down and then behave as before (SIGINT still
raises KeyboardInterrupt, SIGTERM still terminates), and an atexit hook is the backstop for a
normal interpreter exit that skipped the context manager. A signal arriving during teardown is
held back until teardown finishes, so a second Ctrl-C cannot leave half a lab behind.
SIGKILL cannot be caught: `python -m tests.lab.cleanup` handles that case.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TeardownGuard:
    """Runs `teardown` once on signal, atexit, or an explicit `run()`."""

    def __init__(self, teardown: Callable[[], None], *, handle_signals: bool = True) -> None:
        self._teardown = teardown
        self._handle_signals = handle_signals
        self._previous: dict[int, Any] = {}
        self._running = False
        self._done = False
        self._deferred: int | None = None

    def install(self) -> None:
        atexit.register(self.run)
        # signal.signal only works in the main thread; elsewhere (a lab built from a worker
        # thread) the context manager and atexit still cover teardown.
        if self._handle_signals and threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._on_signal)

    def uninstall(self) -> None:
        """Stop guarding without tearing down (used when a lab is kept running)."""
        atexit.unregister(self.run)
        self._restore_handlers()

    def run(self) -> None:
        """Tear down once; later calls are no-ops."""
        if self._done or self._running:
            return
        self._running = True
        try:
            self._teardown()
        finally:
            self._done = True
            self._running = False
            atexit.unregister(self.run)
            self._restore_handlers()
        if self._deferred is not None:
            sig, self._deferred = self._deferred, None
            self._chain(sig, None)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if self._running:
            self._deferred = sig
            return
        previous = self._previous.get(sig)
        self.run()
        self._chain(sig, frame, previous)

    def _restore_handlers(self) -> None:
        for sig, handler in self._previous.items():
            if threading.current_thread() is threading.main_thread():
                signal.signal(sig, handler)
        self._previous.clear()

    @staticmethod
    def _chain(sig: int, frame: FrameType | None, previous: Any = None) -> None:
        """Behave as the handler that was in place before the lab went up."""
        if previous is None:
            previous = signal.getsignal(sig)
        if callable(previous):
            previous(sig, frame)
        elif previous == signal.SIG_DFL:
            if sig == signal.SIGINT:
                raise KeyboardInterrupt
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
        # SIG_IGN: the signal was being ignored before; keep ignoring it.
