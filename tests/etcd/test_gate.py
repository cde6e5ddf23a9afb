"""Group commit (gate.py): a process's acquisitions of one section that queue behind a slow
swap share the next one, in arrival order; and what must hold for every member of a group:
its own deadline, a fresh answer, and a clean exit when its thread is interrupted."""

from __future__ import annotations

import contextlib
import ctypes
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from lessor import Context, Lease, Partition
from lessor.errors import DeadlineExceeded, LessorError
from lessor.etcd import EtcdLessor
from lessor.etcd.gate import Gate
from lessor.testing import FaultProxy


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


def test_a_range_freed_before_a_queued_acquisition_began_is_granted_to_it(
    etcd_server: Any, prefix: str
) -> None:
    """A swap that succeeds for others must not pass a stale cache off as fresh: the cached
    state still shows a released entry live, and the acquisition queued behind that swap must
    see the range free (the swap reads back every marker)."""
    with EtcdLessor(etcd_server.endpoints, prefix=prefix) as other:
        held = other.lease("s", Partition(10, 20), 30)
        assert held.__enter__().partitions == [Partition(10, 20)]
        first, _, let_go, cleanup = queue_behind_a_stalled_swap(etcd_server, prefix, [], heal=False)
        link, lessor = cleanup
        try:
            gate: Gate[Any] = lessor._sections["s"].gate
            held.__exit__(None, None, None)  # released while the cache still shows it live
            late = Holder(lessor, Partition(10, 20), let_go)
            late.start()
            until(lambda: gate.queued == 1)
            link.heal()
            assert late.got.wait(20) and late.error is None, late.error
            assert late.lease is not None and late.lease.partitions == [Partition(10, 20)]
        finally:
            close_all(let_go, [first, late], cleanup)


def test_short_deadlines_in_a_group_do_not_fail_the_others(etcd_server: Any, prefix: str) -> None:
    """Acquisitions with a few milliseconds to live, or cancelled, share groups with ones that
    have 20 s: only their own calls may fail."""
    stop = time.monotonic() + 4
    errors: list[str] = []
    granted = [0]

    def patient(lessor: EtcdLessor, i: int) -> None:
        while time.monotonic() < stop:
            ctx = Context.background().with_timeout(20)
            try:
                with lessor.lease("s", Partition(1000 + i, 1001 + i), 5, ctx=ctx):
                    granted[0] += 1
            except Exception as e:
                errors.append(repr(e))

    def hurried(lessor: EtcdLessor, i: int) -> None:
        rng = random.Random(i)
        while time.monotonic() < stop:
            ctx = Context.background().with_timeout(rng.uniform(0.001, 0.03))
            if rng.random() < 0.5:
                timer = threading.Timer(rng.uniform(0, 0.02), ctx.cancel)
                timer.start()
            with (
                contextlib.suppress(LessorError),
                lessor.lease("s", Partition(i, i + 1), 5, ctx=ctx),
            ):
                pass

    with EtcdLessor(etcd_server.endpoints, prefix=prefix) as lessor:
        threads = [threading.Thread(target=patient, args=(lessor, i)) for i in range(4)]
        threads += [threading.Thread(target=hurried, args=(lessor, i)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors, f"{len(errors)} patient acquisitions failed, e.g. {errors[:3]}"
    assert granted[0] > 0


@pytest.mark.parametrize("share", [False, True])
def test_a_group_keeps_its_members_deadlines(etcd_server: Any, prefix: str, share: bool) -> None:
    """32 acquisitions with 0.6 s each, 40 ms from etcd: one group must not make them wait for
    an etcd lease each, one after another."""
    with (
        FaultProxy(etcd_server.endpoint, delay=0.02) as link,
        EtcdLessor([link.address], prefix=prefix, share_leases=share) as lessor,
    ):
        with lessor.lease("s", Partition(10**6, 10**6 + 1), 1):
            pass
        took: list[float] = []
        outcomes: list[str] = []

        def acquire(i: int) -> None:
            ctx = Context.background().with_timeout(0.6)
            start = time.monotonic()
            try:
                with lessor.lease("s", Partition(10 * i, 10 * i + 10), 5, ctx=ctx):
                    outcomes.append("granted")
            except LessorError as e:
                outcomes.append(type(e).__name__)
            took.append(time.monotonic() - start)

        threads = [threading.Thread(target=acquire, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert max(took) < 0.6 + 0.15, f"an acquisition with a 0.6 s deadline took {max(took):.2f}s"
    assert outcomes.count("granted") >= 16, outcomes


class Interrupt(BaseException):
    """Stands for KeyboardInterrupt, delivered to one thread."""


def test_an_interrupted_waiter_leaves_the_queue(etcd_server: Any, prefix: str) -> None:
    first, _, let_go, cleanup = queue_behind_a_stalled_swap(etcd_server, prefix, [], heal=False)
    link, lessor = cleanup
    try:
        gate: Gate[Any] = lessor._sections["s"].gate
        interrupted = threading.Event()

        def wait_in_queue() -> None:
            try:
                with lessor.lease("s", Partition(1, 2), 5):
                    pass
            except Interrupt:
                interrupted.set()

        waiter = threading.Thread(target=wait_in_queue, daemon=True)
        waiter.start()
        until(lambda: gate.queued == 1)
        assert waiter.ident is not None
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(waiter.ident), ctypes.py_object(Interrupt)
        )
        assert interrupted.wait(5)
        assert gate.queued == 0
        link.heal()
        assert first.got.wait(20) and first.error is None, first.error
        ctx = Context.background().with_timeout(3)
        with lessor.lease("s", Partition(2, 3), 5, ctx=ctx) as lease:  # not wedged
            assert lease.partitions == [Partition(2, 3)]
    finally:
        close_all(let_go, [first], cleanup)


def test_a_member_interrupted_inside_another_s_attempt_leaves_no_leaderless_gate(
    etcd_server: Any, prefix: str
) -> None:
    """Regression (4569aea): a thread interrupted while its acquisition was a member of
    another thread's attempt was later handed the lead, which it never took up: every later
    acquisition of the section waited out its whole deadline."""
    link = FaultProxy(etcd_server.endpoint).start()
    lessor = EtcdLessor([link.address], prefix=prefix, rpc_timeout=0.3, acquire_timeout=20)
    threads: list[threading.Thread] = []
    try:
        with lessor.lease("s", Partition(1000, 1001), 5):
            pass  # cached, with an etcd lease at hand
        gate: Gate[Any] = lessor._sections["s"].gate
        link.blackhole()
        outcomes: dict[str, BaseException | None] = {}

        def acquire(name: str, part: Partition, seconds: float) -> None:
            try:
                ctx = Context.background().with_timeout(seconds)
                with lessor.lease("s", part, 5, ctx=ctx):
                    outcomes[name] = None
            except BaseException as e:
                outcomes[name] = e

        # The leader's deadline passes while the interrupted member's thread still waits for the
        # attempt's outcome (at 4569aea: up to rpc_timeout + 1 s), so the lead goes to it.
        leader = threading.Thread(target=acquire, args=("leader", Partition(0, 1), 1.0))
        leader.start()
        threads.append(leader)
        until(lambda: gate.leading and gate.queued == 0)  # the leader's first attempt stalls
        member = threading.Thread(target=acquire, args=("member", Partition(1, 2), 30.0))
        member.start()
        threads.append(member)
        until(lambda: gate.queued == 1)
        until(lambda: gate.queued == 0)  # the leader's next attempt took the member in
        assert member.ident is not None
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(member.ident), ctypes.py_object(Interrupt)
        )
        member.join(5)
        assert isinstance(outcomes.get("member"), Interrupt), outcomes
        leader.join(10)  # its deadline passes while etcd does not answer
        assert isinstance(outcomes.get("leader"), LessorError), outcomes
        link.heal()
        ctx = Context.background().with_timeout(5)
        with lessor.lease("s", Partition(2, 3), 5, ctx=ctx) as lease:  # not wedged
            assert lease.partitions == [Partition(2, 3)]
        until(lambda: not gate.leading)
    finally:
        link.heal()
        for t in threads:
            t.join(20)
        lessor.close()
        link.close()
