"""Prometheus metrics for leases (the ``metrics`` extra: ``pip install 'lessor[metrics]'``).

``lessor.metrics.enable()`` registers these, labelled by backend ("memory", "etcd"), and
exports them from then on; serve them with ``prometheus_client.start_http_server(port)`` or
your framework's exporter:

* ``lessor_acquisitions_total{backend,outcome}``: leases granted; ``outcome`` is ``full``
  (everything asked), ``partial`` or ``empty`` (others held all of it).
* ``lessor_granted_fraction{backend}``: histogram of the share of the asked keys granted.
* ``lessor_acquire_seconds{backend}``: histogram of acquisition latency, granted or not.
* ``lessor_acquire_errors_total{backend,error}``: failed acquisitions by error class
  (``Unavailable``, ``DeadlineExceeded``, ``Cancelled``, ...).
* ``lessor_cas_retries_total{backend}``: compare-and-swaps lost to another writer and retried.
* ``lessor_held_seconds{backend}``: histogram of how long leases were held.
* ``lessor_release_failures_total{backend}``: give-backs that failed (the lease then ends at
  its expiry).

Sections are not a label: a process may use many, and each label value is a time series.
"""

from __future__ import annotations

import threading

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "lessor.metrics needs prometheus-client: pip install 'lessor[metrics]'"
    ) from e

from lessor.observe import Observer, add_observer, remove_observer
from lessor.partition import Partition, SortedPartitions

__all__ = ["PrometheusObserver", "disable", "enable"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_FRACTION_BUCKETS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)
_HELD_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900)


class PrometheusObserver(Observer):
    """The metrics above, registered in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.acquisitions = Counter(
            "lessor_acquisitions",
            "Leases granted, by whether all, some or none of the asked keys were granted.",
            ["backend", "outcome"],
            registry=registry,
        )
        self.granted_fraction = Histogram(
            "lessor_granted_fraction",
            "Share of the asked keys that a lease granted.",
            ["backend"],
            buckets=_FRACTION_BUCKETS,
            registry=registry,
        )
        self.acquire_seconds = Histogram(
            "lessor_acquire_seconds",
            "Time to acquire a lease, granted or not.",
            ["backend"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.acquire_errors = Counter(
            "lessor_acquire_errors",
            "Acquisitions that failed, by error class.",
            ["backend", "error"],
            registry=registry,
        )
        self.cas_retries = Counter(
            "lessor_cas_retries",
            "Compare-and-swaps lost to another writer and retried.",
            ["backend"],
            registry=registry,
        )
        self.held_seconds = Histogram(
            "lessor_held_seconds",
            "How long leases were held before being given back.",
            ["backend"],
            buckets=_HELD_BUCKETS,
            registry=registry,
        )
        self.release_failures = Counter(
            "lessor_release_failures",
            "Leases whose give-back failed (they end at their expiry).",
            ["backend"],
            registry=registry,
        )

    def acquired(
        self,
        backend: str,
        section_id: str,
        asked: Partition,
        granted: SortedPartitions,
        seconds: float,
    ) -> None:
        size = asked.high - asked.low
        got = sum(p.high - p.low for p in granted)
        outcome = "empty" if got == 0 else "full" if got >= size else "partial"
        self.acquisitions.labels(backend, outcome).inc()
        self.granted_fraction.labels(backend).observe(got / size if size else 1.0)
        self.acquire_seconds.labels(backend).observe(seconds)

    def acquire_failed(
        self, backend: str, section_id: str, error: BaseException, seconds: float
    ) -> None:
        self.acquire_errors.labels(backend, type(error).__name__).inc()
        self.acquire_seconds.labels(backend).observe(seconds)

    def released(self, backend: str, section_id: str, held_seconds: float) -> None:
        self.held_seconds.labels(backend).observe(held_seconds)

    def release_failed(self, backend: str, section_id: str, error: BaseException) -> None:
        self.release_failures.labels(backend).inc()

    def conflict(self, backend: str, section_id: str) -> None:
        self.cas_retries.labels(backend).inc()


_lock = threading.Lock()
_enabled: dict[int, PrometheusObserver] = {}  # id(registry) -> its observer


def enable(registry: CollectorRegistry | None = None) -> PrometheusObserver:
    """Start counting lease events into ``registry`` (default: prometheus_client's global
    one). Enabling the same registry again returns the same observer."""
    registry = REGISTRY if registry is None else registry
    with _lock:
        observer = _enabled.get(id(registry))
        if observer is None:
            observer = _enabled[id(registry)] = PrometheusObserver(registry)
        add_observer(observer)
        return observer


def disable(registry: CollectorRegistry | None = None) -> None:
    """Stop counting into ``registry``; its metrics keep their last values."""
    registry = REGISTRY if registry is None else registry
    with _lock:
        observer = _enabled.get(id(registry))
        if observer is not None:
            remove_observer(observer)
