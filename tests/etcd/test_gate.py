"""Group commit (gate.py): a process's acquisitions of one section that queue behind a slow
swap share the next one, in arrival order."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from lessor import Context, Lease, Partition
from lessor.errors import DeadlineExceeded
from lessor.etcd import EtcdLessor
from lessor.etcd.gate import Gate
from lessor.etcd.proxy import FaultProxy


def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition of the lessor's queue (it has no event to await)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        Context.background().wait(0.005)


class Holder(threading.Thread):
    """Acquires one lease and holds it until told to let go."""

    def __init__(self, lessor: EtcdLessor, part: Partition, let_go: threading.Event) -> None:
        super().__init__(daemon=True)
        self.lessor, self.part, self.let_go = lessor, part, let_go
        self.lease: Lease | None = None
        self.error: BaseException | None = None
        self.got = threading.Event()

    def run(self) -> None:
        try:
            with self.lessor.lease("s", self.part, 10) as lease:
                self.lease = lease
                self.got.set()
                self.let_go.wait(10)
        except BaseException as e:
            self.error = e
            self.got.set()


def queue_behind_a_stalled_swap(
    etcd_server: Any, prefix: str, parts: list[Partition], *, heal: bool = True
) -> tuple[Holder, list[Holder], threading.Event, list[Any]]:
    """One holder whose swap stalls (the link to etcd holds everything back), then one more
    holder per part, started one at a time so that their queue order is known; then the link
    heals, unless told not to."""
    cleanup: list[Any] = []
    link = FaultProxy(etcd_server.endpoint).start()
    cleanup.append(link)
    lessor = EtcdLessor([link.address], prefix=prefix, rpc_timeout=10, acquire_timeout=20)
    cleanup.append(lessor)
    with lessor.lease("s", Partition(1000, 1001), 5):
        pass  # the section is cached and an etcd lease is at hand: next comes one swap
    gate: Gate[Any] = lessor._sections["s"].gate
    let_go = threading.Event()
    link.blackhole()
    first = Holder(lessor, Partition(500, 600), let_go)
    first.start()
    until(lambda: gate.leading and gate.queued == 0)  # first is inside its attempt
    queued = []
    for i, part in enumerate(parts, start=1):
        h = Holder(lessor, part, let_go)
        h.start()
        until(lambda i=i: gate.queued == i)  # type: ignore[misc]
        queued.append(h)
    if heal:
        link.heal()
    return first, queued, let_go, cleanup


def close_all(let_go: threading.Event, holders: list[Holder], cleanup: list[Any]) -> None:
    let_go.set()
    for h in holders:
        h.join(20)
    for thing in reversed(cleanup):
        thing.close()


def test_queued_acquisitions_share_one_swap(etcd_server: Any, prefix: str) -> None:
    parts = [Partition(16 * i, 16 * i + 16) for i in range(8)]
    first, queued, let_go, cleanup = queue_behind_a_stalled_swap(etcd_server, prefix, parts)
    try:
        for h in (first, *queued):
            assert h.got.wait(20)
            assert h.error is None, h.error
        assert first.lease is not None and first.lease.partitions == [Partition(500, 600)]
        leases = [h.lease for h in queued]
        assert [lease.partitions for lease in leases if lease] == [[p] for p in parts]
        tokens = {lease.token for lease in leases if lease}
        assert len(tokens) == 1, f"one swap for all queued acquisitions, got tokens {tokens}"
        assert tokens.pop() > first.lease.token
    finally:
        close_all(let_go, [first, *queued], cleanup)


def test_in_one_swap_the_earlier_in_the_queue_gets_the_overlap(
    etcd_server: Any, prefix: str
) -> None:
    parts = [Partition(0, 100), Partition(50, 150), Partition(0, 200)]
    first, queued, let_go, cleanup = queue_behind_a_stalled_swap(etcd_server, prefix, parts)
    try:
        for h in queued:
            assert h.got.wait(20)
            assert h.error is None, h.error
        got = [h.lease.partitions if h.lease else None for h in queued]
        assert got == [[Partition(0, 100)], [Partition(100, 150)], [Partition(150, 200)]]
    finally:
        close_all(let_go, [first, *queued], cleanup)


def test_a_queued_acquisition_whose_deadline_passes_leaves_the_queue(
    etcd_server: Any, prefix: str
) -> None:
    first, _, let_go, cleanup = queue_behind_a_stalled_swap(etcd_server, prefix, [], heal=False)
    try:
        link, lessor = cleanup
        gate: Gate[Any] = lessor._sections["s"].gate
        ctx = Context.background().with_timeout(0.3)
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="went first"):
            with lessor.lease("s", Partition(0, 10), 5, ctx=ctx):
                pass
        assert time.monotonic() - start < 1.0
        assert gate.queued == 0
        link.heal()
        assert first.got.wait(20) and first.error is None, first.error
    finally:
        close_all(let_go, [first], cleanup)
