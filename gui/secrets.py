"""Keeps the signed-in user's coordination token: in the OS keyring, or only in memory.

Passwords are never stored. The token is what admin pages need; where the `keyring` package has no
usable backend (a bare session with no Secret Service or KWallet), the token lives in this process
only and `warning` says so, so the user knows an app restart means signing in again. Keyring calls
can block on D-Bus or an unlock prompt, so callers run them off the UI thread (`asyncio.to_thread`).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

SERVICE = "pcloud"
MEMORY_WARNING = (
    "No system keyring was found: your admin sign-in is kept in memory only and is forgotten "
    "when PCloud quits."
)


def _usable_keyring() -> Any | None:
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:
        return None
    backend = keyring.get_keyring()
    # The chainer wraps several backends; an empty chain or the `fail` backend cannot store.
    if isinstance(backend, fail.Keyring):
        return None
    if getattr(backend, "priority", 1) <= 0:
        return None
    return backend


class TokenStore:
    """Tokens keyed by server (the join link's https://host:port)."""

    def __init__(self, backend: Any | None = None, *, use_system: bool = True) -> None:
        self._memory: dict[str, str] = {}
        self._backend = (
            backend if backend is not None else (_usable_keyring() if use_system else None)
        )

    @property
    def persistent(self) -> bool:
        return self._backend is not None

    @property
    def warning(self) -> str | None:
        return None if self.persistent else MEMORY_WARNING

    def load(self, server: str) -> str | None:
        if server in self._memory:
            return self._memory[server]
        if self._backend is None:
            return None
        try:
            token: str | None = self._backend.get_password(SERVICE, server)
        except Exception as e:  # noqa: BLE001 - any keyring failure means "no token"
            log.warning("cannot read the keyring: %s", e)
            return None
        if token:
            self._memory[server] = token
        return token

    def save(self, server: str, token: str) -> None:
        self._memory[server] = token
        if self._backend is None:
            return
        try:
            self._backend.set_password(SERVICE, server, token)
        except Exception as e:  # noqa: BLE001 - fall back to memory rather than lose the token
            log.warning("cannot write the keyring, keeping the token in memory: %s", e)
            self._backend = None

    def clear(self, server: str) -> None:
        self._memory.pop(server, None)
        if self._backend is None:
            return
        try:
            self._backend.delete_password(SERVICE, server)
        except Exception as e:  # noqa: BLE001 - nothing stored is fine
            log.debug("no token to delete for %s: %s", server, e)
