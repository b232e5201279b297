"""An in-memory Driver for unit tests of the backend core: no processes, no netlink.

It keeps what a real interface would (keys, peers, port) by running the same `diff()` the real
drivers run, and records every applied config and every computed change so tests can assert on
them. Tests can set handshakes and counters with `set_peer_stats` and make calls fail with
`fail_next`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from pcloud.backend.keys import PrivateKey
from pcloud.backend.wg.diff import (
    ConfigDiff,
    DeviceState,
    PeerState,
    applied_endpoints,
    applied_tries,
    diff,
    normalize_key,
)
from pcloud.backend.wg.driver import DriverError, InterfaceConfig, PeerStats


class FakeDriver:
    kind = "fake"

    def __init__(self, name: str = "pcloud0", *, listen_port: int = 51820) -> None:
        self.name = name
        self.started = False
        self.closed = False
        self.removed = False
        self.applied: list[InterfaceConfig] = []  # every config given to apply(), in order
        self.changes: list[ConfigDiff] = []  # the difference each apply() computed
        self.state = DeviceState(listen_port=listen_port)
        self.config: InterfaceConfig | None = None  # the last applied config
        self._fail: DriverError | None = None

    def fail_next(self, error: DriverError) -> None:
        """Make the next start/apply raise `error`."""
        self._fail = error

    def _maybe_fail(self) -> None:
        if self._fail is not None:
            err, self._fail = self._fail, None
            raise err

    async def start(self) -> None:
        self._maybe_fail()
        self.started = True
        self.closed = False

    async def apply(self, config: InterfaceConfig) -> None:
        if not self.started:
            raise DriverError("apply() before start()")
        self._maybe_fail()
        last = self.config
        change = diff(
            self.state,
            config,
            applied_endpoints(last) if last else None,
            applied_tries(last) if last else None,
        )
        self.applied.append(config)
        self.changes.append(change)
        self.config = config
        peers = {p.public_key: p for p in self.state.peers}
        for op in change.peers:
            if op.action == "remove":
                peers.pop(op.public_key, None)
                continue
            cur = peers.get(op.public_key) or PeerState(public_key=op.public_key)
            peers[op.public_key] = replace(
                cur,
                endpoint=op.endpoint if op.endpoint is not None else cur.endpoint,
                persistent_keepalive=(
                    op.persistent_keepalive
                    if op.persistent_keepalive is not None
                    else cur.persistent_keepalive
                ),
                allowed_ips=op.allowed_ips if op.allowed_ips is not None else cur.allowed_ips,
            )
        self.state = DeviceState(
            private_key=PrivateKey.from_b64(config.private_key),
            listen_port=change.listen_port or self.state.listen_port,
            peers=tuple(peers.values()),
        )

    def set_peer_stats(
        self,
        public_key: str,
        *,
        last_handshake: datetime | None = None,
        rx_bytes: int = 0,
        tx_bytes: int = 0,
        endpoint: str | None = None,
    ) -> None:
        """Pretend WireGuard saw traffic from a configured peer."""
        key = normalize_key(public_key)
        peers = []
        for p in self.state.peers:
            if p.public_key == key:
                p = replace(
                    p,
                    last_handshake=last_handshake,
                    rx_bytes=rx_bytes,
                    tx_bytes=tx_bytes,
                    endpoint=endpoint or p.endpoint,
                )
            peers.append(p)
        self.state = replace(self.state, peers=tuple(peers))

    async def stats(self) -> list[PeerStats]:
        return self.state.stats()

    async def listen_port(self) -> int:
        return self.state.listen_port if self.started else 0

    async def close(self, *, remove_interface: bool) -> None:
        self.closed = True
        self.started = False
        if remove_interface:
            self.removed = True
            self.state = DeviceState(listen_port=self.state.listen_port)
            self.config = None
