"""Routes for the policy document: read, write (validated and tested), reset and dry run."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from ..errors import ApiError
from ..policy import builtin, servers
from ..policy.document import PolicyError, parse_policy
from ..policy.engine import run_tests, view_changes
from ..protocol import (
    PeerChange,
    PolicyAnswer,
    PolicyCheckAnswer,
    PolicyTestResult,
    PolicyWriteAnswer,
)
from .deps import AdminUser, StateDep

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


@router.get("/acl", response_model=PolicyAnswer)
async def get_acl(state: StateDep, _: AdminUser) -> PolicyAnswer:
    return PolicyAnswer(policy=state.policy_text)


@router.put("/acl", response_model=PolicyWriteAnswer, openapi_extra=POLICY_BODY)
async def put_acl(
    request: Request,
    state: StateDep,
    _: AdminUser,
    force: bool = Query(False, description="apply even if servers lose reach to each other"),
) -> PolicyWriteAnswer:
    text = await policy_text(request)
    try:
        policy = parse_policy(text, users=state.users.keys())
    except PolicyError as exc:
        raise ApiError(400, "invalid_policy", "; ".join(exc.errors)) from None
    trial = state.index.copy()
    trial.set_policy(policy)
    failed = [t for t in run_tests(policy, trial) if not t.passed]
    if failed:
        detail = "; ".join(f"test for {t.src}: {', '.join(t.errors)}" for t in failed)
        raise ApiError(400, "policy_test_failed", f"policy tests failed: {detail}")
    names = {n.id: n.hostname for n in state.nodes.values()}
    losses = servers.reach_losses(state.index, trial, names)
    if losses and not force:
        raise ApiError(409, "server_reach_lost", servers.refusal(losses))
    await state.set_policy(policy)
    return PolicyWriteAnswer(ok=True, warnings=list(policy.warnings))


@router.delete("/acl", response_model=PolicyWriteAnswer)
async def delete_acl(state: StateDep, _: AdminUser) -> PolicyWriteAnswer:
    await state.set_policy(None)
    return PolicyWriteAnswer(ok=True)


@router.post("/acl/check", response_model=PolicyCheckAnswer, openapi_extra=POLICY_BODY)
async def check_acl(request: Request, state: StateDep, _: AdminUser) -> PolicyCheckAnswer:
    text = await policy_text(request)
    try:
        policy = parse_policy(text, users=state.users.keys())
    except PolicyError as exc:
        return PolicyCheckAnswer(ok=False, errors=exc.errors, warnings=[], tests=[], changes=[])
    trial = state.index.copy()
    trial.set_policy(policy)
    tests = [
        PolicyTestResult(src=t.src, passed=t.passed, errors=t.errors)
        for t in run_tests(policy, trial)
    ]
    names = {n.id: n.hostname for n in state.nodes.values()}
    diff = view_changes(state.index, trial, list(state.nodes))
    changes = [
        PeerChange(
            node=names[nid],
            gains=sorted(names[p] for p in gains),
            loses=sorted(names[p] for p in loses),
        )
        for nid, (gains, loses) in sorted(diff.items(), key=lambda kv: names[kv[0]])
    ]
    ok = all(t.passed for t in tests)
    errors = [] if ok else [f"test for {t.src} failed" for t in tests if not t.passed]
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
