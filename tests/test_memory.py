"""What the memory lessor adds to the contract."""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from typing import Any

from lessor import Context, MemoryLessor, Partition

P = Partition


def test_held_lists_live_leases_and_forgets_released_ones() -> None:
    lessor = MemoryLessor()
    with lessor.lease("s", P(0, 10), 60) as a, lessor.lease("s", P(5, 20), 60) as b:
        assert lessor.held("s") == {a.token: [P(0, 10)], b.token: [P(10, 20)]}
    assert lessor.held("s") == {}
    assert lessor.table._sections == {}  # nothing left behind for released sections


def test_private_instances_do_not_share() -> None:
    one, two = MemoryLessor(), MemoryLessor()
    with one.lease("s", P(0, 10), 60), two.lease("s", P(0, 10), 60) as lease:
        assert lease.partitions == [P(0, 10)]


# -- wait_free: how the memory lessor waits ----------------------------------------------------


class _Registering(dict[str, set[Any]]):
    """``LeaseTable._waiters`` that sets ``registered`` when a waiter registers (under the
    lessor's lock, so a test that takes the lock next sees the waiter)."""

    def __init__(self) -> None:
        super().__init__()
        self.registered = threading.Event()

    def setdefault(self, key: str, default: set[Any]) -> set[Any]:
        self.registered.set()
        return super().setdefault(key, default)


def _start_waiting(
    lessor: MemoryLessor, ctx: Context, section_id: str, part: Partition
) -> tuple[threading.Event, list[bool]]:
    result: list[bool] = []
    returned = threading.Event()

    def wait() -> None:
        result.append(lessor.wait_free(ctx, section_id, part))
        returned.set()

    threading.Thread(target=wait, daemon=True).start()
    return returned, result


def test_wait_free_wakes_on_the_give_back_of_a_watched_lease_only() -> None:
    lessor = MemoryLessor()
    lessor.table._waiters = waiters = _Registering()
    with ExitStack() as stack:
        watched = stack.enter_context(lessor.lease("s", P(0, 10), 60))
        beside = lessor.lease("s", P(20, 30), 60)  # same section, not in the part
        elsewhere = lessor.lease("t", P(0, 10), 60)  # same part, another section
        beside.__enter__()
        elsewhere.__enter__()
        returned, result = _start_waiting(lessor, Context.background(), "s", P(0, 15))
        assert waiters.registered.wait(30)
        with lessor.table._lock:
            (waiter,) = waiters["s"]
        assert waiter.tokens == {watched.token}
        beside.__exit__(None, None, None)
        elsewhere.__exit__(None, None, None)
        # Give-backs of leases it does not watch wake nothing (they cancel synchronously).
        assert not waiter.wake.done()
        assert not returned.is_set()
    # the watched lease is given back here
    assert returned.wait(30)
    assert result == [True]
    assert lessor.table._waiters == {}  # nothing left behind


def test_wait_free_wakes_at_the_earliest_deadline_of_what_it_watches() -> None:
    lessor = MemoryLessor()
    with lessor.lease("s", P(0, 10), 60) as long_, lessor.lease("s", P(10, 20), 0.2) as short:
        assert lessor.wait_free(Context.background().with_timeout(60), "s", P(0, 20)) is True
        assert short.deadline <= time.monotonic() < long_.deadline
        assert lessor.held("s") == {long_.token: [P(0, 10)]}
    assert lessor.table._waiters == {}


def test_wait_free_sees_an_expired_lease_as_free_before_it_is_pruned() -> None:
    lessor = MemoryLessor()
    with lessor.lease("s", P(0, 10), 0.05) as lease:
        lease.ctx.wait()
        assert lease.token in lessor.table._sections["s"]  # still recorded, but past its deadline
        assert lessor.wait_free(Context.background().with_timeout(60), "s", P(0, 10)) is True


def test_a_cancelled_wait_free_leaves_nothing_behind() -> None:
    lessor = MemoryLessor()
    lessor.table._waiters = waiters = _Registering()
    ctx = Context.background()
    with lessor.lease("s", P(0, 10), 60):
        returned, result = _start_waiting(lessor, ctx, "s", P(0, 10))
        assert waiters.registered.wait(30)
        ctx.cancel()
        assert returned.wait(30)
        assert result == [False]
        assert lessor.table._waiters == {}
