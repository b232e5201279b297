"""Deadline-based polling: the lab's only way to wait for something to become true.

Tests must never sleep a fixed time to "let things settle"; they poll a condition with a deadline
and, on timeout, fail with a message naming what was awaited and the last value or exception seen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A polled condition did not become true before its deadline.

    An AssertionError so that pytest renders it as a test failure rather than an error.
    """


def _describe(what: str, timeout: float, last: object, last_exc: BaseException | None) -> str:
    detail = f"last exception: {last_exc!r}" if last_exc is not None else f"last value: {last!r}"
    return f"timed out after {timeout:.1f}s waiting for {what}; {detail}"


def wait_for(
    predicate: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Call `predicate` until it returns a truthy value, and return that value.

    Exceptions raised by the predicate count as "not yet" (a socket not listening yet, a file not
    written yet) and the last one is reported on timeout.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
        except Exception as exc:  # any failure means "not ready yet"
            last_exc = exc
        else:
            if value:
                return value
            last, last_exc = value, None
        if time.monotonic() >= deadline:
            raise WaitTimeout(_describe(what, timeout, last, last_exc))
        time.sleep(interval)


@overload
async def async_wait_for(
    predicate: Callable[[], Awaitable[T]],
    *,
    timeout: float,  # noqa: ASYNC109
    interval: float = ...,
    what: str = ...,
) -> T: ...
@overload
async def async_wait_for(
    predicate: Callable[[], T],
    *,
    timeout: float,  # noqa: ASYNC109
    interval: float = ...,
    what: str = ...,
) -> T: ...
async def async_wait_for(
    predicate: Callable[[], Any],
    *,
    # Same signature as wait_for on purpose; the deadline also bounds each failure report.
    timeout: float,  # noqa: ASYNC109
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Async twin of `wait_for`; `predicate` may be a plain or an async callable."""
    deadline = time.monotonic() + timeout
    last: object = None
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if isinstance(value, Awaitable):
                value = await value
        except Exception as exc:  # any failure means "not ready yet"
            last_exc = exc
        else:
            if value:
                return value
            last, last_exc = value, None
        if time.monotonic() >= deadline:
            raise WaitTimeout(_describe(what, timeout, last, last_exc))
        await asyncio.sleep(interval)
