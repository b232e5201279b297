"""Routes for the policy document: read, write (validated and tested), reset and dry run.

The policy work runs off the event loop within limits (policy_work).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Query, Request

from ..errors import ApiError
from ..policy import builtin, servers
from ..policy.document import Policy, PolicyError, parse_policy
from ..policy.engine import PeerIndex, TestOutcome, run_tests, view_changes
from ..policy.filter import signature
from ..protocol import (
    PeerChange,
    PolicyAnswer,
    PolicyCheckAnswer,
    PolicyTestResult,
    PolicyWriteAnswer,
)
from .deps import AdminUser, StateDep
from .policy_work import check_counts, run_policy_job

router = APIRouter(prefix="/api/v1", tags=["policy"])

POLICY_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/hujson": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
}


async def policy_text(request: Request) -> str:
    raw = await request.body()
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_policy", "policy must be UTF-8 text") from None
    if not text.strip():
        raise ApiError(400, "invalid_policy", "policy body is empty")
    return text


def by_hostname(errors: list[str], state: StateDep) -> list[str]:
    """The engine names nodes by id ("node 5 -> node 2"); people know them by hostname."""
    names = {n.id: n.hostname for n in state.nodes.values()}

    def name(m: re.Match[str]) -> str:
        return names.get(int(m.group(1)), m.group(0))

    return [re.sub(r"\bnode (\d+)\b", name, e) for e in errors]


@router.get("/acl", response_model=PolicyAnswer)
async def get_acl(state: StateDep, _: AdminUser) -> PolicyAnswer:
    return PolicyAnswer(policy=state.policy_text)


def prepare(
    state: StateDep, text: str | None, *, check: bool
) -> Callable[[], tuple[Policy | None, PeerIndex, list[TestOutcome], dict[int, Any]]]:
    """The worker's job over snapshots taken here on the loop (the loop keeps changing the
    working set meanwhile): parse, compile, run the tests and diff every node's view."""
    users = frozenset(state.users)
    base = state.index.copy()
    node_ids = list(state.nodes)

    def work() -> tuple[Policy | None, PeerIndex, list[TestOutcome], dict[int, Any]]:
        policy = None
        if text is not None:
            check_counts(text)
            try:
                policy = parse_policy(text, users=users)
            except PolicyError as exc:
                if check:
                    raise _Invalid(exc.errors) from None
                raise ApiError(400, "invalid_policy", "; ".join(exc.errors)) from None
        trial = base.copy()
        trial.set_policy(policy)
        tests = run_tests(policy, trial) if policy is not None else []
        if not check and any(not t.passed for t in tests):
            return policy, trial, tests, {}
        changes: dict[int, Any] = dict(view_changes(base, trial, node_ids))
        for n in node_ids:
            # A port-only change leaves the peers alone but not the node's packet filter.
            if signature(base, n) != signature(trial, n):
                gains, loses = changes.get(n, (set(), set()))[:2]
                changes[n] = (gains, loses, True)
        return policy, trial, tests, changes

    return work


class _Invalid(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@router.put("/acl", response_model=PolicyWriteAnswer, openapi_extra=POLICY_BODY)
async def put_acl(
    request: Request,
    state: StateDep,
    _: AdminUser,
    force: bool = Query(False, description="apply even if servers lose reach to each other"),
) -> PolicyWriteAnswer:
    text = await policy_text(request)
    version = state.version
    job = prepare(state, text, check=False)
    policy, trial, tests, changes = await run_policy_job(job, state.settings.policy_timeout_s)
    failed = [t for t in tests if not t.passed]
    if failed:
        detail = "; ".join(
            f"test for {t.src}: {', '.join(by_hostname(t.errors, state))}" for t in failed
        )
        raise ApiError(400, "policy_test_failed", f"policy tests failed: {detail}")
    assert policy is not None
    names = {n.id: n.hostname for n in state.nodes.values()}
    losses = servers.reach_losses(state.index, trial, names)
    if losses and not force:
        raise ApiError(409, "server_reach_lost", servers.refusal(losses))
    await state.set_policy(policy, prepared=(version, trial, changes))
    return PolicyWriteAnswer(ok=True, warnings=list(policy.warnings))


@router.delete("/acl", response_model=PolicyWriteAnswer)
async def delete_acl(state: StateDep, _: AdminUser) -> PolicyWriteAnswer:
    version = state.version
    job = prepare(state, None, check=False)
    _policy, trial, _tests, changes = await run_policy_job(job, state.settings.policy_timeout_s)
    await state.set_policy(None, prepared=(version, trial, changes))
    return PolicyWriteAnswer(ok=True)


@router.post("/acl/check", response_model=PolicyCheckAnswer, openapi_extra=POLICY_BODY)
async def check_acl(request: Request, state: StateDep, _: AdminUser) -> PolicyCheckAnswer:
    text = await policy_text(request)
    job = prepare(state, text, check=True)
    try:
        policy, trial, outcomes, diff = await run_policy_job(job, state.settings.policy_timeout_s)
    except _Invalid as exc:
        return PolicyCheckAnswer(ok=False, errors=exc.errors, warnings=[], tests=[], changes=[])
    assert policy is not None
    tests = [
        PolicyTestResult(src=t.src, passed=t.passed, errors=by_hostname(t.errors, state))
        for t in outcomes
    ]
    names = {n.id: n.hostname for n in state.nodes.values()}
    changes = [
        PeerChange(
            node=names[nid],
            gains=sorted(names[p] for p in change[0] if p in names),
            loses=sorted(names[p] for p in change[1] if p in names),
        )
        for nid, change in sorted(diff.items(), key=lambda kv: names.get(kv[0], ""))
        if nid in names and (change[0] or change[1])
    ]
    ok = all(t.passed for t in tests)
    errors = [f"test for {t.src} failed: {', '.join(t.errors)}" for t in tests if not t.passed]
    warnings = list(policy.warnings)
    cut = servers.cut_infrastructure(trial)
    if cut:
        warnings.append(cut)
    losses = servers.reach_losses(state.index, trial, names)
    if losses:
        warnings.append(servers.refusal(losses))
    return PolicyCheckAnswer(
        ok=ok,
        errors=errors,
        warnings=warnings,
        tests=tests,
        changes=changes,
        builtin=builtin.describe(),
        server_reach=losses,
    )
