"""lessor.metrics against a real etcd: a lost compare-and-swap is counted as a CAS retry."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from lessor import Partition
from lessor.etcd import EtcdLessor
from lessor.metrics import disable, enable


def test_a_stale_cache_costs_one_counted_retry(etcd_server: Any, prefix: str) -> None:
    registry = CollectorRegistry()
    enable(registry)
    try:
        with (
            EtcdLessor(etcd_server.endpoints, prefix=prefix) as a,
            EtcdLessor(etcd_server.endpoints, prefix=prefix) as b,
        ):
            with a.lease("s", Partition(0, 10), 5):
                pass  # a now caches the section as it left it
            with b.lease("s", Partition(20, 30), 5):  # changes the section behind a's back
                with a.lease("s", Partition(0, 10), 5) as lease:
                    assert lease.partitions.to_strings() == ["0_a"]
    finally:
        disable(registry)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"backend": "etcd", **labels})

    assert sample("lessor_cas_retries_total") == 1
    assert sample("lessor_acquisitions_total", outcome="full") == 3
    assert sample("lessor_held_seconds_count") == 3
