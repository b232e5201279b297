"""pytest fixtures for lab tests: `lab` gives a fresh, always-torn-down Lab per test.

Load it as a plugin so that its report hook is active too: `pytest_plugins = ["tests.lab.fixtures"]`
in a test module or the root conftest. The fixture skips, saying why, on machines that cannot run
the lab. When a test using it fails, the last lines of every lab process's log are attached to
the failure report as a "lab logs" section (pytest never shows the fixture the test's exception,
so the Lab's own context manager cannot do it here).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest

from .lab import Lab, unavailable_reason

_LAB_KEY = pytest.StashKey[Lab]()


def skip_unless_lab_possible() -> None:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A running Lab with no hosts yet; torn down after the test whatever happens."""
    skip_unless_lab_possible()
    with Lab() as running:
        request.node.stash[_LAB_KEY] = running
        yield running


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    running = item.stash.get(_LAB_KEY, None)
    if running is not None and report.failed and report.when == "call":
        report.sections.append(("lab logs", running.log_tails()))
    return report
