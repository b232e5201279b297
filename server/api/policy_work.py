"""Policy work off the event loop, within limits (what `PUT/DELETE /acl` and `POST /acl/check` run).

Parsing HuJSON (json5 is pure Python), compiling rules, running `tests` and diffing every node's
view cost seconds for a large document; on the event loop that stalled every request and long
poll. Here, in a worker thread, a document is first checked for nesting (a scan, before json5 can
hit its recursion limit), then counted (rules, aliases, tests, groups, hosts), then parsed,
compiled, tested and diffed (the body size is bounded by the server's body limit). One policy
job runs at a time per server; it is answered 422 `policy_too_complex` when it takes longer than
`Settings.policy_timeout_s` (the thread finishes on its own; a new job meanwhile gets 429).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import json5

from ..errors import ApiError

T = TypeVar("T")

MAX_DEPTH = 32
MAX_RULES = 1000
MAX_TESTS = 500
MAX_GROUPS = 1000
MAX_HOSTS = 1000
MAX_ENTRIES = 20_000  # aliases in all rules' src/dst, tests' targets and groups' members

_busy = threading.Lock()


def too_big(message: str) -> ApiError:
    return ApiError(422, "policy_too_complex", message)


_TOKEN = re.compile(r"""["'\[\]{}]|//|/\*""")
_STRING_END = {q: re.compile(rf"(?:[^{q}\\]|\\.)*{q}", re.DOTALL) for q in "\"'"}


def check_depth(text: str, limit: int = MAX_DEPTH) -> None:
    """Refuse nesting deeper than `limit`, skipping strings and comments (HuJSON), before
    json5 (recursive) sees the text. Runs in the worker: ~0.1 s for a 256 KiB body."""
    depth = 0
    pos, n = 0, len(text)
    while pos < n:
        m = _TOKEN.search(text, pos)
        if m is None:
            return
        tok, pos = m.group(), m.end()
        if tok in "\"'":
            closing = _STRING_END[tok].match(text, pos)
            pos = n if closing is None else closing.end()
        elif tok == "//":
            end = text.find("\n", pos)
            pos = n if end < 0 else end + 1
        elif tok == "/*":
            end = text.find("*/", pos)
            pos = n if end < 0 else end + 2
        elif tok in "[{":
            depth += 1
            if depth > limit:
                raise too_big(f"policy nests deeper than {limit} levels")
        else:
            depth -= 1


def _count(value: Any) -> int:
    if isinstance(value, list):
        return len(value)
    if isinstance(value, dict):
        return sum(_count(v) for v in value.values())
    return 1


def check_counts(text: str) -> None:
    """Refuse documents nested too deeply or with more rules, tests, groups, hosts or aliases
    than the limits. Runs in the worker (json5 is slow); shape errors are left to
    `parse_policy`."""
    check_depth(text)
    try:
        doc = json.loads(text)
    except ValueError:
        try:
            doc = json5.loads(text)
        except (ValueError, RecursionError):
            return  # parse_policy names the syntax error
    if not isinstance(doc, dict):
        return
    limits = (("acls", MAX_RULES), ("tests", MAX_TESTS), ("groups", MAX_GROUPS))
    for section, limit in (*limits, ("hosts", MAX_HOSTS)):
        value = doc.get(section)
        if isinstance(value, list | dict) and len(value) > limit:
            raise too_big(f"policy has {len(value)} {section}, at most {limit} are allowed")
    entries = 0
    for section in ("acls", "tests"):
        for item in doc.get(section) or []:
            if isinstance(item, dict):
                entries += sum(_count(v) for k, v in item.items() if k != "action")
    groups = doc.get("groups")
    if isinstance(groups, dict):
        entries += sum(_count(v) for v in groups.values())
    if entries > MAX_ENTRIES:
        raise too_big(f"policy names {entries} aliases in all, at most {MAX_ENTRIES} are allowed")


async def run_policy_job(work: Callable[[], T], timeout_s: float) -> T:
    """Run `work` in a worker thread, one at a time, within `timeout_s`."""
    if not _busy.acquire(blocking=False):
        raise ApiError(
            429,
            "policy_busy",
            "another policy change or check is still being computed; retry shortly",
            retry_after=2,
        )

    def job() -> T:
        try:
            return work()
        finally:
            _busy.release()

    try:
        future = asyncio.get_running_loop().run_in_executor(None, job)
    except BaseException:
        _busy.release()
        raise
    try:
        async with asyncio.timeout(timeout_s):
            return await asyncio.shield(future)
    except TimeoutError:
        raise too_big(
            f"checking the policy took longer than {timeout_s:g} s: split it into fewer rules, "
            "tests or aliases"
        ) from None
    except RecursionError:
        raise too_big(f"policy nests too deeply (at most {MAX_DEPTH} levels)") from None
