"""A tiny run of the resolver benchmark (bench/dns_resolver.py), so CI proves it still works: the
figures are not checked, only that every question got its answer."""

from __future__ import annotations

from bench.dns_resolver import report, run
from tests.support.ports import free_port


def test_dns_benchmark_small_run() -> None:
    res = run([20], [1], 0.2, free_port())
    assert [(p.peers, p.cache) for p in res.phases] == [(20, True), (20, False)]
    for phase in res.phases:
        assert phase.queries > 0 and phase.lost == 0 and phase.p99_ms > 0
    assert set(res.build_ms) == {20}
    assert "p99 of a lone query" in report(res)
