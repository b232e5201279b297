"""Policy changes: commit a new policy document (or the default), then swap it in and tell every
node whose view changed (`FanOut.policy_applied`, which the watch uses for foreign swaps too)."""

from __future__ import annotations

from ..policy.document import Policy
from ..store.base import Delete, Op, Put
from .fanout import PreparedPolicy
from .transact import Plan, Transactions


class PolicyChanges(Transactions):
    """The transaction that swaps the policy."""

    async def set_policy(
        self, policy: Policy | None, prepared: PreparedPolicy | None = None
    ) -> int:
        """Commit a policy. `prepared` = (the version it was computed at, the new index, each
        node's view change), worked out off the loop (api.policy_work); used when nothing
        changed since, else the diff is made here. How many nodes' views changed."""

        def build() -> Plan[int]:
            op: Op = (
                Put("policy", "current", {"text": policy.text})
                if policy is not None
                else Delete("policy", "current")
            )
            ready = prepared if prepared is not None and prepared[0] == self.version else None
            return Plan([op], lambda version: self.policy_applied(policy, version, ready))

        return await self.transact(build)
