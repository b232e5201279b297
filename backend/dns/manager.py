"""What the backend core calls for names: `recover` at start, `ensure` after every applied netmap,
`stop` on down, logout and exit.

`ensure` starts the resolver and points the system at it the first time (systemd-resolved when it
runs, else the managed resolv.conf), and afterwards only swaps the name table, so a netmap change
(a rename, a policy change) is visible to the next query. A failure here never takes the tunnel
down: it is returned as a warning for the status.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pcloud.backend.config import DnsMode
from pcloud.backend.dns import resolved
from pcloud.backend.dns.names import NameTable, build_table
from pcloud.backend.dns.resolvconf import DEFAULT_NAMESERVER, ManagedResolvConf, parse, render
from pcloud.backend.dns.server import DnsServer, Resolver
from pcloud.server.protocol import DEFAULT_DOMAIN, Netmap

log = logging.getLogger(__name__)

PORT = 53  # resolv.conf has no port field, and resolved's per-link servers default to 53


class DnsManager:
    def __init__(
        self,
        *,
        mode: DnsMode,
        state_dir: Path,
        interface: str,
        listen: str,
        resolv_conf: Path,
        port: int = PORT,
    ) -> None:
        self.mode, self.interface, self.listen, self.port = mode, interface, listen, port
        self.file = ManagedResolvConf(resolv_conf, state_dir)
        self.server: DnsServer | None = None
        self.active_mode: str | None = None  # "resolved" or "file" while we are installed
        self._netmap: Netmap | None = None

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def recover(self) -> None:
        """At start: undo a managed resolv.conf a killed backend left behind (the next `ensure`
        installs a fresh one if the network is wanted up)."""
        try:
            if self.file.restore():
                log.warning("restored %s left managed by a previous run", self.file.path)
        except OSError as e:
            log.error("could not restore %s: %s", self.file.path, e)

    async def ensure(self, netmap: Netmap) -> str | None:
        """Names follow `netmap`; returns a warning when names cannot work, else None."""
        if not self.enabled:
            return None
        if netmap is self._netmap and self.server is not None:
            return None
        self._netmap = netmap
        table = build_table(netmap)
        try:
            if self.server is None:
                await self._start(table, netmap.self.address)
            else:
                old = self.server.resolver.table.domain
                self.server.resolver.table = table
                if table.domain != old:  # the network's domain changed: new search domain
                    await self._point_system(table.domain)
        except (OSError, resolved.ResolvedError) as e:
            await self.stop()
            log.error("device names are off: %s", e)
            return f"device names do not resolve: {e}"
        return None

    async def _start(self, table: NameTable, overlay_address: str) -> None:
        use_resolved = self.mode == "resolved" or (
            self.mode == "auto" and resolved.resolved_running()
        )
        if use_resolved:
            upstream_conf = parse(_read(resolved.UPSTREAM_FILE))
            host = overlay_address  # resolved sends per-link queries out of the link
        else:
            upstream_conf = self.file.original()
            host = self.listen
        upstreams = [
            (ns, 53) for ns in upstream_conf.nameservers or [DEFAULT_NAMESERVER]
            if ns not in (host, self.listen)
        ]  # fmt: skip
        server = DnsServer(Resolver(table, upstreams), host, self.port)
        await server.start()
        self.server = server
        self.active_mode = "resolved" if use_resolved else "file"
        await self._point_system(table.domain)
        log.info(
            "device names: *.%s via %s (%s), forwarding to %s", table.domain, host,
            self.active_mode, ", ".join(h for h, _ in upstreams) or "nobody",
        )  # fmt: skip

    async def _point_system(self, domain: str) -> None:
        """The system's resolver configuration names ours for `domain`."""
        assert self.server is not None
        if self.active_mode == "resolved":
            await resolved.apply_link(self.interface, self.server.host, domain)
        else:
            content = render(self.server.host, domain, self.file.original(), self.file.dir)
            self.file.install(content)

    async def stop(self) -> None:
        """Undo the system change, then stop listening (in that order: no query finds a dead
        resolver configured)."""
        mode, self.active_mode = self.active_mode, None
        if mode == "resolved":
            await resolved.revert_link(self.interface)
        try:
            self.file.restore()
        except OSError as e:
            log.error("could not restore %s: %s", self.file.path, e)
        if self.server is not None:
            await self.server.close()
            self.server = None
        self._netmap = None

    @property
    def domain(self) -> str:
        return self.server.resolver.table.domain if self.server else DEFAULT_DOMAIN


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
