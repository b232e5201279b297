"""E2E support: a `mesh` per test (lab + coordination server), a table of the timings seen, and
the tables tests record (`TABLES`, e.g. the site grid's paths), all printed in the terminal
summary so CI's output shows them even when the tests pass."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence

import pytest
from rich.box import MARKDOWN
from rich.console import Console
from rich.table import Table

from tests.lab import Lab
from tests.lab.mesh import Mesh

FIGURES: list[tuple[str, str, str]] = []
TABLES: list[tuple[str, Table]] = []

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


def record_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Keep a table for the terminal summary."""
    table = Table(*header, box=MARKDOWN)  # plain ASCII: CI logs, and pastes into a report
    for row in rows:
        table.add_row(*row)
    TABLES.append((title, table))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for title, table in TABLES:
        out = io.StringIO()
        Console(file=out, width=200, color_system=None).print(table)
        terminalreporter.section(title)
        terminalreporter.write(out.getvalue())
    if not FIGURES:
        return
    terminalreporter.section("end-to-end timings")
    width = max(len(s) for s, _, _ in FIGURES)
    for scenario, name, text in FIGURES:
        terminalreporter.write_line(f"{scenario:<{width}}  {name}: {text}")
