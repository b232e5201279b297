"""Stopping asyncio tasks without losing a cancel of our own.

`task.cancel(); with suppress(CancelledError): await task` swallows a cancel of the *waiting*
task too when it lands during that await, and the waiter then runs on as if nothing happened
(seen: the NAT monitor, stopped while the node's removal took the backend down, looped forever
and the shutdown waited on it). `cancel_and_wait` tells the two apart."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel `tasks` (None ones skipped) and wait until every one has ended. Their own
    CancelledError is expected and dropped; the first other error one ended with is raised
    after all have ended, and so is a cancel of the caller, before or during the wait."""
    live = [t for t in tasks if t is not None]
    for task in live:
        task.cancel()
    failure: BaseException | None = None
    for task in live:
        try:
            await task
        except asyncio.CancelledError:
            pass  # theirs, or ours: told apart below
        except Exception as exc:  # noqa: BLE001 - raised below, after the others have ended
            failure = failure or exc
    me = asyncio.current_task()
    if me is not None and me.cancelling():
        raise asyncio.CancelledError
    if failure is not None:
        raise failure
