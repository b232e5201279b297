"""next_state: the whole table, and the tracker's transition log."""

from __future__ import annotations

import logging

import pytest

from pcloud.backend.state import Facts, State, StateTracker, next_state


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (Facts(False, True, False, False), State.NEEDS_LOGIN),
        (Facts(False, False, True, True), State.NEEDS_LOGIN),
        (Facts(True, False, True, True), State.STOPPED),
        (Facts(True, True, False, False), State.STARTING),
        (Facts(True, True, True, False), State.STARTING),
        (Facts(True, True, False, True), State.STARTING),
        (Facts(True, True, True, True), State.RUNNING),
        (Facts(True, True, True, True, fatal_error="wireguard-go missing"), State.ERROR),
        (Facts(False, False, False, False, fatal_error="bad key"), State.ERROR),
    ],
)
def test_next_state(facts: Facts, expected: State) -> None:
    state, reason = next_state(facts)
    assert state is expected
    assert reason


def test_error_reason_is_the_fatal_error() -> None:
    assert next_state(Facts(True, True, True, True, "boom")) == (State.ERROR, "boom")


def test_tracker_logs_only_real_transitions(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pcloud.backend.state")
    tracker = StateTracker()
    assert tracker.update(Facts(False, True, False, False))
    assert not tracker.update(Facts(False, False, False, False))
    assert tracker.update(Facts(True, True, True, True))
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "state None -> NeedsLogin (no node credentials)",
        "state NeedsLogin -> Running (netmap applied to the interface)",
    ]


def test_state_values_are_the_api_names() -> None:
    assert [s.value for s in State] == ["NeedsLogin", "Stopped", "Starting", "Running", "Error"]
