"""`--headless` (Raspberry Pi, no GUI): log in with the configured pre-auth key at boot.

Retries while the coordination server is unreachable (capped, jittered backoff: the Pi may boot
before the server or the network); a refusal (bad key, CA fingerprint mismatch) is final and
shows as the Error state with its reason.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from pcloud.backend.config import BackendSettings, ConfigError
from pcloud.backend.control.poller import backoff_delay
from pcloud.backend.errors import LoginFailed
from pcloud.backend.localapi.schemas import LoginRequest
from pcloud.backend.persist import NodeInfo

log = logging.getLogger(__name__)


class HeadlessHost(Protocol):
    """What the headless login uses of the backend (`LocalBackend` is one)."""

    @property
    def settings(self) -> BackendSettings: ...

    @property
    def node(self) -> NodeInfo | None: ...

    @property
    def warning(self) -> str | None: ...

    async def login(self, req: LoginRequest) -> None: ...

    def set_fatal(self, reason: str) -> None: ...

    def set_warning(self, text: str | None) -> None: ...


def _transient(e: LoginFailed) -> bool:
    return e.code == "server_unreachable" or (
        e.code == "pinning_failed" and "mismatch" not in e.message
    )


async def headless_login(backend: HeadlessHost) -> None:
    try:
        key = backend.settings.read_auth_key()
    except ConfigError as e:
        backend.set_fatal(str(e))
        return
    server = backend.settings.server
    if not server or not key:
        backend.set_fatal("headless mode needs --server and --auth-key or --auth-key-file")
        return
    attempt = 0
    while backend.node is None:
        try:
            await backend.login(LoginRequest(server_url=server, auth_key=key))
            if backend.warning and backend.warning.startswith("login failing"):
                backend.set_warning(None)
            return
        except LoginFailed as e:
            if not _transient(e):
                backend.set_fatal(f"headless login failed: {e.message}")
                return
            attempt += 1
            delay = backoff_delay(attempt)
            log.warning("headless login failed (%s); retrying in %.1fs", e.message, delay)
            # Still retried (the server may come up, the network may change), but a login that
            # keeps failing says why in `pcloud status` instead of waiting silently.
            backend.set_warning(f"login failing (attempt {attempt}, retrying): {e.message}")
            await asyncio.sleep(delay)  # backoff before the next attempt
