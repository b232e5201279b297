"""`Reach`: what server/reach runs for the app's life. A loop (every `EVERY_S`) re-resolves
the public URL's name and re-advertises on a change, and re-issues this server's leaf when the
cluster's public hosts are not all in it (then the TLS context takes the new leaf for the next
handshakes); `start_echo` opens the UDP address echo (the real server only, see __main__)."""

from __future__ import annotations

import asyncio
import logging
import ssl

from pcloud.shared.tasks import cancel_and_wait

from ..config import Settings
from ..security.tls import TlsFiles, ensure_leaf, leaf_names
from ..state import State
from .echo import start_echo
from .public import PublicAddress, public_cert_names, readvertise

log = logging.getLogger("pcloud.server.reach")

EVERY_S = 2.0


class Reach:
    def __init__(self, settings: Settings, state: State) -> None:
        self.settings = settings
        self.state = state
        self.public = PublicAddress(settings.public_url)
        self.files = TlsFiles.in_dir(settings.state_dir)
        # Set by the process that serves TLS with it: a re-issued leaf is loaded into it.
        self.tls_context: ssl.SSLContext | None = None
        self._names: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._echo: list[asyncio.DatagramTransport] = []

    async def start(self) -> None:
        await self.public.refresh()
        self._task = asyncio.create_task(self._run())

    async def start_echo(self) -> None:
        self._echo = await start_echo([lst.host for lst in self.settings.listen])

    async def stop(self) -> None:
        for transport in self._echo:
            transport.close()
        await cancel_and_wait(self._task)

    def cert_names(self) -> list[str]:
        return self.settings.cert_names() + public_cert_names(self.state)

    def refresh_leaf(self) -> bool:
        """Re-issue the leaf when a public host is missing from it; True when it was."""
        wanted = {n for n in self.cert_names() if n}
        if wanted == self._names:
            return False
        self._names = wanted
        if wanted <= leaf_names(self.files):
            return False
        ensure_leaf(self.files, sorted(wanted))
        if self.tls_context is not None:
            self.tls_context.load_cert_chain(str(self.files.cert), str(self.files.key))
        log.info("leaf certificate re-issued for %s", ", ".join(sorted(wanted)))
        return True

    async def _run(self) -> None:
        while True:
            try:
                change = await self.public.refresh()
                if change is not None and change[0] is not None:
                    await readvertise(self.state, change[0], change[1])
                self.refresh_leaf()
            except Exception:  # noqa: BLE001 - a store hiccup: the next round tries again
                log.warning("reach upkeep failed; retrying", exc_info=True)
            await asyncio.sleep(EVERY_S)  # a period, not synchronisation
