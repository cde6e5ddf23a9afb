"""lessor.metrics: the Prometheus series move with the leases."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from lessor import MemoryLessor, Partition
from lessor.metrics import PrometheusObserver, disable, enable


@pytest.fixture
def metrics() -> Iterator[PrometheusObserver]:
    registry = CollectorRegistry()
    observer = enable(registry)
    try:
        yield observer
    finally:
        disable(registry)


def value(observer: PrometheusObserver, name: str, **labels: str) -> float:
    got = observer.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def test_outcomes_fractions_latency_and_hold_times(metrics: PrometheusObserver) -> None:
    lessor = MemoryLessor()
    with lessor.lease("s", Partition(0, 100), 5):
        with lessor.lease("s", Partition(50, 150), 5):  # half of it is taken
            with lessor.lease("s", Partition(0, 10), 5):  # all of it is taken
                pass
    memory = {"backend": "memory"}
    assert value(metrics, "lessor_acquisitions_total", outcome="full", **memory) == 1
    assert value(metrics, "lessor_acquisitions_total", outcome="partial", **memory) == 1
    assert value(metrics, "lessor_acquisitions_total", outcome="empty", **memory) == 1
    assert value(metrics, "lessor_granted_fraction_sum", **memory) == pytest.approx(1.5)
    assert value(metrics, "lessor_acquire_seconds_count", **memory) == 3
    assert value(metrics, "lessor_held_seconds_count", **memory) == 3
    assert value(metrics, "lessor_release_failures_total", **memory) == 0


def test_release_failures_and_errors_are_counted(metrics: PrometheusObserver) -> None:
    class FailingRelease(MemoryLessor):
        def _release(self, grant: object) -> None:  # type: ignore[override]
            raise OSError("gone")

    with FailingRelease().lease("s", Partition(0, 1), 5):
        pass
    assert value(metrics, "lessor_release_failures_total", backend="memory") == 1


def test_enable_is_idempotent_and_disable_stops_counting() -> None:
    registry = CollectorRegistry()
    first = enable(registry)
    assert enable(registry) is first
    disable(registry)
    with MemoryLessor().lease("s", Partition(0, 1), 5):
        pass
    assert value(first, "lessor_acquire_seconds_count", backend="memory") == 0


def test_the_observer_overrides_only_observer_events() -> None:
    """A misspelled event method would be a new method nobody calls: every public method of
    PrometheusObserver is one of Observer's. (It exports no metric of each attempt, of the
    wait at a gate, or of when a release freed its ranges, ``attempt``, ``queued`` and
    ``freed``: those feed the benchmark's breakdown.)"""
    from lessor.observe import Observer  # noqa: PLC0415

    own = {n for n, m in vars(PrometheusObserver).items() if callable(m) and n[0] != "_"}
    events = {n for n, m in vars(Observer).items() if callable(m) and n[0] != "_"}
    assert own <= events
    assert events - own == {"attempt", "freed", "queued"}
