"""Keeps the one nftables table of ours in step with the netmap's filter, and says how it went.

`PacketFilter.apply(rules)` installs the rules for the WireGuard interface (atomically, and only
when they differ from what is installed); `remove()` deletes our table (Disconnect, logout).
The state it reports is what `pcloud status` shows: `in_force` (with the rule count), `off`
(nothing installed: not connected), `none` (the server sent no filter: an older server) or
`failed` (with the reason). The caller withholds every tunnel while it is `failed`: a peer must
never be configured without the rules that govern it (fail safe, never silently open).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from pcloud.backend.filter import nft, ruleset
from pcloud.server.protocol import FilterRule

log = logging.getLogger(__name__)

FilterState = Literal["in_force", "off", "none", "failed"]


@dataclass
class PacketFilter:
    interface: str
    nft: str = "nft"  # the executable (a setting so tests can point at a missing one)
    install: bool = True  # False: build and count the rules only (no interface to guard)
    state: FilterState = "off"
    reason: str | None = None
    rules: list[FilterRule] = field(default_factory=list)
    nft_rules: int = 0
    _installed: list[dict[str, object]] | None = None  # the batch in force, to skip no-ops

    @property
    def failed(self) -> bool:
        return self.state == "failed"

    async def apply(self, rules: list[FilterRule] | None) -> bool:
        """Enforce `rules` (None: the server sends no filter). False when they could not be
        installed (state `failed`, reason set)."""
        if rules is None:
            await self.remove()
            self.state, self.reason = "none", "the coordination server sent no packet filter"
            return True
        batch = ruleset.build(rules, self.interface)
        if batch == self._installed and self.state == "in_force":
            return True
        try:
            if self.install:
                await nft.run(batch, nft=self.nft)
        except nft.NftError as e:
            self._installed = None
            if (self.state, self.reason) != ("failed", str(e)):  # once per reason, not per retry
                log.error("packet filter not installed (tunnels withheld): %s", e)
            self.state, self.reason = "failed", str(e)
            return False
        self._installed = batch
        self.rules, self.nft_rules = list(rules), ruleset.nft_rule_count(batch)
        if self.state != "in_force":
            log.info("packet filter in force: %d rules", len(rules))
        self.state, self.reason = "in_force", None
        return True

    async def remove(self) -> None:
        """Delete our table; never touches any other. A failure is logged, not raised: there
        is nothing left to protect once the interface is gone."""
        self._installed = None
        self.rules, self.nft_rules = [], 0
        self.state, self.reason = "off", None
        if not self.install:
            return
        try:
            await nft.run(ruleset.delete(), nft=self.nft)
        except nft.NftError as e:
            log.warning("removing the packet filter failed: %s", e)
