"""E2E support: a `mesh` per test (lab + coordination server) and a table of the timings seen."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.lab import Lab
from tests.lab.mesh import Mesh

FIGURES: list[tuple[str, str, str]] = []

# Short presence timers so the ephemeral scenario finishes in seconds, not minutes.
SERVER_ARGS = ("--offline-grace", "1", "--ephemeral-timeout", "2")


@pytest.fixture
def mesh(lab: Lab) -> Iterator[Mesh]:
    m = Mesh(lab)
    m.start_server(lab.add_host("rpi111"), *SERVER_ARGS)
    m.create_user("admin", "admin-password", admin=True)
    yield m


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Callable[[str, float, str], None]:
    """Record a timing the scenario saw; printed in the terminal summary."""
    scenario = request.node.name.removeprefix("test_")

    def record(name: str, value: float, unit: str = "s") -> None:
        text = f"{value:.2f} {unit}" if unit == "s" else f"{value:g} {unit}"
        FIGURES.append((scenario, name, text))
        print(f"[{scenario}] {name}: {text}")

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    terminalreporter.section("end-to-end timings")
    width = max(len(s) for s, _, _ in FIGURES)
    for scenario, name, text in FIGURES:
        terminalreporter.write_line(f"{scenario:<{width}}  {name}: {text}")
