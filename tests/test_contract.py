"""The Lessor contract, once, run against every backend in conftest.BACKENDS.

Mirrors LUCI's datastore lessor_test.go (partial leases around existing ones, empty results,
expiry freeing ranges, deadline at lease expiry, deadline capped by ctx, independent sections)
and adds what Python callers rely on: release on return and raise, fencing tokens, argument
checks, and a concurrency check over a recorded history. Then ``wait_free``: on every backend
that observes its holders, and the base class's polling default on a third-party backend; and
``is_held`` on every backend, and the base class's refusal on a third-party one.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest

from lessor import (
    Cancelled,
    Context,
    DeadlineExceeded,
    Grant,
    Lease,
    Lessor,
    Partition,
    SortedPartitions,
    Unavailable,
    fencing_token,
    wait_backoff,
)
from lessor.contract import WAIT_FREE_FIRST, WAIT_FREE_MAX
from lessor.testing import History, Holding, find_overlaps, find_token_inversions

from .conftest import Backend

P = Partition
Sections = Callable[[], str]


class Recorder:
    """Captures the callback's arguments; fails if called twice."""

    def __init__(self) -> None:
        self.ctx: Context | None = None
        self.parts: SortedPartitions | None = None

    def __call__(self, ctx: Context, parts: SortedPartitions) -> str:
        assert self.ctx is None, "callback called twice"
        self.ctx, self.parts = ctx, parts
        return "result"


def held(lessor: Lessor, section_id: str, part: Partition, dur: float = 30) -> SortedPartitions:
    """What a fresh lease on ``part`` would get right now (released at once)."""
    with lessor.lease(section_id, part, dur) as lease:
        return lease.partitions


def test_whole_range_when_free_and_deadline_at_expiry(
    backend: Backend, lessor_of: Lessor, section: Sections
) -> None:
    rec = Recorder()
    before = time.monotonic()
    result = lessor_of.with_lease(Context.background(), section(), P(13, 33), 60, rec)
    after = time.monotonic()
    assert result == "result"
    assert rec.parts == [P(13, 33)]
    assert rec.ctx is not None and rec.ctx.deadline is not None
    assert before + 60 - backend.deadline_slack <= rec.ctx.deadline <= after + 60


def test_deadline_capped_by_ctx(backend: Backend, lessor_of: Lessor, section: Sections) -> None:
    ctx = Context.background().with_timeout(5)
    rec = Recorder()
    lessor_of.with_lease(ctx, section(), P(13, 33), 60, rec)
    assert rec.ctx is not None and rec.ctx.deadline == ctx.deadline


def test_partial_lease_around_existing(lessor_of: Lessor, section: Sections) -> None:
    s = section()
    with (
        lessor_of.lease(s, P(10, 15), 60),
        lessor_of.lease(s, P(20, 25), 60),
        lessor_of.lease(s, P(30, 35), 60),
    ):
        rec = Recorder()
        lessor_of.with_lease(Context.background(), s, P(13, 33), 60, rec)
        assert rec.parts == [P(15, 20), P(25, 30)]


def test_empty_lease_still_calls_back(lessor_of: Lessor, section: Sections) -> None:
    s = section()
    with lessor_of.lease(s, P(10, 15), 60):
        rec = Recorder()
        lessor_of.with_lease(Context.background(), s, P(13, 15), 60, rec)
        assert rec.ctx is not None
        assert rec.parts == []


def test_sections_are_independent(lessor_of: Lessor, section: Sections) -> None:
    a, b = section(), section()
    with lessor_of.lease(a, P(0, 100), 60) as la:
        assert la.partitions == [P(0, 100)]
        assert held(lessor_of, b, P(0, 100)) == [P(0, 100)]
        assert held(lessor_of, a, P(0, 100)) == []


def test_released_on_return(lessor_of: Lessor, section: Sections) -> None:
    s = section()
    lessor_of.with_lease(Context.background(), s, P(0, 100), 60, lambda ctx, parts: None)
    assert held(lessor_of, s, P(0, 100)) == [P(0, 100)]


def test_released_on_raise_and_exception_propagates(lessor_of: Lessor, section: Sections) -> None:
    s = section()

    def boom(ctx: Context, parts: SortedPartitions) -> None:
        raise KeyError("from the callback")

    with pytest.raises(KeyError, match="from the callback"):
        lessor_of.with_lease(Context.background(), s, P(0, 100), 60, boom)
    assert held(lessor_of, s, P(0, 100)) == [P(0, 100)]


def test_lease_ctx_is_cancelled_after_release(lessor_of: Lessor, section: Sections) -> None:
    with lessor_of.lease(section(), P(0, 10), 60) as lease:
        assert not lease.ctx.done()
    assert isinstance(lease.ctx.err, Cancelled)


def test_lease_ctx_follows_caller_cancellation(lessor_of: Lessor, section: Sections) -> None:
    ctx = Context.background()
    with lessor_of.lease(section(), P(0, 10), 60, ctx=ctx) as lease:
        ctx.cancel()
        assert lease.ctx.wait(5)
        assert isinstance(lease.ctx.err, Cancelled)


def test_expiry_frees_ranges(backend: Backend, lessor_of: Lessor, section: Sections) -> None:
    """LUCI's "active and expired": an expired lease no longer withholds its ranges, while a
    live one still does. Holders here never give their leases back until the end."""
    s = section()
    short, long_ = backend.unit, 60.0
    granted_at = time.monotonic()
    with lessor_of.lease(s, P(10, 15), short) as expiring, lessor_of.lease(s, P(20, 25), long_):
        assert expiring.partitions == [P(10, 15)]
        assert held(lessor_of, s, P(13, 33)) == [P(15, 20), P(25, 33)]
        expiring.ctx.wait()  # its holder is now past its deadline but still "holds" it
        assert expiring.ctx.done()
        bound = granted_at + backend.expiry_bound(short) + 1.0
        while (got := held(lessor_of, s, P(13, 33))) != [P(13, 20), P(25, 33)]:
            assert got == [P(15, 20), P(25, 33)], f"unexpected grant {got}"
            assert time.monotonic() < bound, "expired lease still withholds its ranges"
            Context.background().wait(0.05)  # polling the lessor: there is no event to await


def test_late_release_does_not_free_the_successor(
    backend: Backend, lessor_of: Lessor, section: Sections
) -> None:
    s = section()
    stale = lessor_of.lease(s, P(0, 10), backend.unit)
    first = stale.__enter__()
    first.ctx.wait()
    deadline = time.monotonic() + backend.expiry_bound(backend.unit) + 1.0
    while True:
        successor = lessor_of.lease(s, P(0, 10), 60)
        second = successor.__enter__()
        if second.partitions:
            break
        successor.__exit__(None, None, None)
        assert time.monotonic() < deadline, "expired lease never freed its ranges"
        Context.background().wait(0.05)
    try:
        assert second.token > first.token
        stale.__exit__(None, None, None)  # the paused holder wakes up and gives back late
        assert held(lessor_of, s, P(0, 10)) == []
    finally:
        successor.__exit__(None, None, None)


def test_tokens_increase_and_ride_on_ctx(lessor_of: Lessor, section: Sections) -> None:
    s = section()
    tokens = []
    for _ in range(5):
        with lessor_of.lease(s, P(0, 10), 60) as lease:
            assert lease.partitions == [P(0, 10)]
            assert fencing_token(lease.ctx) == lease.token
            assert fencing_token(lease.ctx.with_value("x", 1)) == lease.token
            tokens.append(lease.token)
    assert tokens == sorted(set(tokens))
    assert fencing_token(Context.background()) is None


def test_timedelta_duration(backend: Backend, lessor_of: Lessor, section: Sections) -> None:
    before = time.monotonic()
    with lessor_of.lease(section(), P(0, 10), timedelta(minutes=1)) as lease:
        assert lease.deadline >= before + 60 - backend.deadline_slack
        assert isinstance(lease, Lease) and lease.partitions == [P(0, 10)]


def test_empty_partition_gets_nothing(lessor_of: Lessor, section: Sections) -> None:
    assert held(lessor_of, section(), P(5, 5)) == []


@pytest.mark.parametrize(
    ("section_id", "part", "dur", "error", "message"),
    [
        ("", P(0, 1), 1, ValueError, "section_id must not be empty"),
        (5, P(0, 1), 1, TypeError, "section_id must be a str"),
        (None, P(0, 1), 1, TypeError, "section_id must be a str"),
        ("s", "0_1", 1, TypeError, "part must be a lessor.Partition"),
        ("s", (0, 1), 1, TypeError, "part must be a lessor.Partition"),
        ("s", P(0, 1), 0, ValueError, "positive and finite"),
        ("s", P(0, 1), -1, ValueError, "positive and finite"),
        ("s", P(0, 1), math.inf, ValueError, "positive and finite"),
        ("s", P(0, 1), math.nan, ValueError, "NaN"),
        ("s", P(0, 1), timedelta(0), ValueError, "positive and finite"),
        ("s", P(0, 1), "1", TypeError, "float seconds or a timedelta"),
        ("s", P(0, 1), True, TypeError, "float seconds or a timedelta"),
    ],
)
def test_bad_arguments(
    lessor_of: Lessor,
    section_id: object,
    part: object,
    dur: object,
    error: type[Exception],
    message: str,
) -> None:
    rec = Recorder()
    with pytest.raises(error, match=re.escape(message)):
        lessor_of.with_lease(Context.background(), section_id, part, dur, rec)  # type: ignore[arg-type]
    with pytest.raises(error, match=re.escape(message)):
        lessor_of.lease(section_id, part, dur)  # type: ignore[arg-type]
    assert rec.ctx is None


def test_bad_ctx_and_callback(lessor_of: Lessor) -> None:
    with pytest.raises(TypeError, match=r"ctx must be a lessor\.Context"):
        lessor_of.with_lease(None, "s", P(0, 1), 1, Recorder())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cb must be callable"):
        lessor_of.with_lease(Context.background(), "s", P(0, 1), 1, None)  # type: ignore[arg-type]


def test_done_ctx_is_refused(lessor_of: Lessor, section: Sections) -> None:
    s = section()
    expired = Context.background().with_deadline(time.monotonic() - 1)
    cancelled = Context.background()
    cancelled.cancel()
    rec = Recorder()
    with pytest.raises(DeadlineExceeded):
        lessor_of.with_lease(expired, s, P(0, 10), 60, rec)
    with pytest.raises(Cancelled):
        lessor_of.with_lease(cancelled, s, P(0, 10), 60, rec)
    assert rec.ctx is None
    assert held(lessor_of, s, P(0, 10)) == [P(0, 10)]  # nothing was left held


def test_threads_never_hold_a_common_key(lessor_of: Lessor, section: Sections) -> None:
    """16 threads take random overlapping ranges of one section; the recorded history must
    show no two holders of one key at once, every thread must make progress, and tokens must
    order the leases of each key."""
    s = section()
    threads, seconds, universe = 16, 3.0, 256
    history = History()
    claims: dict[int, int] = {}
    claims_lock = threading.Lock()
    double_claims: list[str] = []
    progress = [0] * threads
    stop = Context.background().with_timeout(seconds)
    failures: list[BaseException] = []

    def worker(n: int) -> None:
        rng = random.Random(n)
        try:
            while not stop.done():
                a, b = sorted(rng.sample(range(universe + 1), 2))
                with lessor_of.lease(s, P(a, b), 5.0) as lease:
                    start = time.monotonic()
                    keys = [k for p in lease.partitions for k in range(p.low, p.high)]
                    with claims_lock:
                        for k in keys:
                            if claims.setdefault(k, n) != n:
                                double_claims.append(f"key {k}: {claims[k]} and {n}")
                    lease.ctx.wait(rng.uniform(0, 0.003))  # the work
                    with claims_lock:
                        for k in keys:
                            if claims.get(k) == n:
                                del claims[k]
                    end = min(time.monotonic(), lease.deadline)
                if keys:
                    progress[n] += 1
                history.record(
                    Holding(f"t{n}", s, tuple(lease.partitions), start, end, lease.token)
                )
        except BaseException as e:  # surfaced below
            failures.append(e)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not failures, failures
    holdings = history.holdings
    overlaps = find_overlaps(holdings)
    assert not overlaps, "\n".join(map(str, overlaps[:5]))
    assert not double_claims, double_claims[:5]
    assert not find_token_inversions(holdings)
    assert all(progress), f"a thread starved: {progress}"
    assert sum(1 for h in holdings if h.ranges) > threads


# -- wait_free -----------------------------------------------------------------------------------


@pytest.fixture
def observing(lessor_of: Lessor) -> Lessor:
    """A lessor whose wait_free observes its holders (the base class's polling default does
    not: it may return True early, which the tests below would take for a failure)."""
    if type(lessor_of)._wait_free is Lessor._wait_free:
        pytest.skip(f"{type(lessor_of).__name__} has only the polling default of _wait_free")
    return lessor_of


class Waiter:
    """wait_free in a thread of its own; ``returned`` is set when it has returned."""

    def __init__(self, lessor: Lessor, ctx: Context, section_id: str, part: Partition) -> None:
        self.returned = threading.Event()
        self.result: bool | None = None
        self.error: BaseException | None = None
        self.at = math.inf
        self._thread = threading.Thread(target=self._run, args=(lessor, ctx, section_id, part))
        self._thread.start()

    def _run(self, lessor: Lessor, ctx: Context, section_id: str, part: Partition) -> None:
        try:
            self.result = lessor.wait_free(ctx, section_id, part)
        except BaseException as e:  # surfaced by outcome()
            self.error = e
        self.at = time.monotonic()
        self.returned.set()

    def outcome(self, timeout: float = 30) -> bool:
        assert self.returned.wait(timeout), "wait_free did not return"
        self._thread.join()
        if self.error is not None:
            raise self.error
        assert isinstance(self.result, bool)
        return self.result


def test_wait_free_returns_true_at_once_when_nothing_of_part_is_held(
    observing: Lessor, section: Sections
) -> None:
    s = section()
    ctx = Context.background().with_timeout(60)  # a wait that blocked would end in False
    assert observing.wait_free(ctx, s, P(0, 10)) is True  # a section nobody used
    with observing.lease(s, P(0, 10), 60):
        assert observing.wait_free(ctx, s, P(10, 20)) is True  # held, but not that part
        assert observing.wait_free(ctx, s, P(5, 5)) is True  # an empty part
        assert observing.wait_free(ctx, section(), P(0, 10)) is True  # another section
    assert observing.wait_free(ctx, s, P(0, 10)) is True  # given back


def test_wait_free_returns_true_when_a_holder_gives_back(
    observing: Lessor, section: Sections
) -> None:
    s = section()
    with observing.lease(s, P(10, 20), 60), observing.lease(s, P(40, 50), 60):
        holder = observing.lease(s, P(0, 10), 60)
        holder.__enter__()
        try:
            waiter = Waiter(observing, Context.background().with_timeout(120), s, P(5, 45))
            # It blocks while every key it saw held stays held (a correct one never returns
            # here, however loaded the machine).
            assert not waiter.returned.wait(0.2)
        finally:
            holder.__exit__(None, None, None)
        assert waiter.outcome() is True  # the other two are still held


def test_wait_free_returns_true_at_the_deadline_of_a_holder_that_overruns_it(
    backend: Backend, observing: Lessor, section: Sections
) -> None:
    s = section()
    ctx = Context.background().with_timeout(backend.expiry_bound(backend.unit) + 30)
    with observing.lease(s, P(0, 10), backend.unit) as lease:  # never given back in time
        assert observing.wait_free(ctx, s, P(0, 100)) is True
        assert time.monotonic() >= lease.deadline  # not before its holder's time was up
        assert held(observing, s, P(0, 100)) == [P(0, 100)]


def test_wait_free_returns_false_at_the_ctx_deadline(observing: Lessor, section: Sections) -> None:
    s = section()
    with observing.lease(s, P(0, 10), 60):
        ctx = Context.background().with_timeout(0.3)
        assert observing.wait_free(ctx, s, P(0, 10)) is False
        assert ctx.deadline is not None and time.monotonic() >= ctx.deadline


def test_wait_free_returns_false_when_ctx_is_cancelled(
    observing: Lessor, section: Sections
) -> None:
    s = section()
    with observing.lease(s, P(0, 10), 60):
        ctx = Context.background()  # no deadline: only the cancel can end the wait
        waiter = Waiter(observing, ctx, s, P(0, 10))
        assert not waiter.returned.wait(0.2)
        ctx.cancel()
        assert waiter.outcome() is False


def test_wait_free_holds_nothing(observing: Lessor, section: Sections) -> None:
    s = section()
    holder = observing.lease(s, P(0, 10), 60)
    holder.__enter__()
    try:
        waiter = Waiter(observing, Context.background().with_timeout(120), s, P(0, 20))
        assert not waiter.returned.wait(0.2)
        assert held(observing, s, P(0, 20)) == [P(10, 20)]  # the waiter holds none of it
    finally:
        holder.__exit__(None, None, None)
    assert waiter.outcome() is True
    assert held(observing, s, P(0, 20)) == [P(0, 20)]


def test_wait_free_with_a_done_ctx_returns_false_at_once(
    lessor_of: Lessor, section: Sections
) -> None:
    s = section()
    expired = Context.background().with_deadline(time.monotonic() - 1)
    cancelled = Context.background()
    cancelled.cancel()
    for ctx in (expired, cancelled):
        assert lessor_of.wait_free(ctx, s, P(0, 10)) is False  # even with nothing held
        assert lessor_of.wait_free(ctx, s, P(5, 5)) is False


@pytest.mark.parametrize(
    ("section_id", "part"),
    [("", P(0, 1)), (5, P(0, 1)), (None, P(0, 1)), ("s", "0_1"), ("s", (0, 1)), ("s", None)],
)
def test_wait_free_checks_its_arguments_as_lease_does(
    lessor_of: Lessor, section_id: object, part: object
) -> None:
    with pytest.raises((TypeError, ValueError)) as by_lease:
        lessor_of.lease(section_id, part, 1)  # type: ignore[arg-type]
    for ctx in (Context.background(), Context.background().with_deadline(0)):  # done or not
        with pytest.raises(by_lease.type, match=re.escape(str(by_lease.value))):
            lessor_of.wait_free(ctx, section_id, part)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"ctx must be a lessor\.Context"):
        lessor_of.wait_free(None, "s", P(0, 1))  # type: ignore[arg-type]


# -- is_held -------------------------------------------------------------------------------------


def test_is_held_says_whether_a_live_lease_holds_a_key_of_part(
    lessor_of: Lessor, section: Sections
) -> None:
    s = section()
    ctx = Context.background().with_timeout(60)
    assert lessor_of.is_held(ctx, s, P(0, 100)) is False  # a section nobody used
    with lessor_of.lease(s, P(10, 20), 60):  # this process's own lease counts too
        assert lessor_of.is_held(ctx, s, P(15, 16)) is True
        assert lessor_of.is_held(ctx, s, P(0, 100)) is True
        assert lessor_of.is_held(ctx, s, P(19, 30)) is True
        assert lessor_of.is_held(ctx, s, P(0, 10)) is False  # touches [10, 20), no overlap
        assert lessor_of.is_held(ctx, s, P(20, 30)) is False
        assert lessor_of.is_held(ctx, s, P(15, 15)) is False  # an empty part
        assert lessor_of.is_held(ctx, section(), P(10, 20)) is False  # another section
        with lessor_of.lease(s, P(0, 30), 60) as partly:  # granted [0, 10) and [20, 30)
            assert partly.partitions == [P(0, 10), P(20, 30)]
            assert lessor_of.is_held(ctx, s, P(25, 26)) is True
        assert lessor_of.is_held(ctx, s, P(25, 26)) is False  # given back
    assert lessor_of.is_held(ctx, s, P(0, 100)) is False  # given back


def test_is_held_holds_nothing(lessor_of: Lessor, section: Sections) -> None:
    s = section()
    ctx = Context.background().with_timeout(60)
    with lessor_of.lease(s, P(0, 10), 60):
        assert lessor_of.is_held(ctx, s, P(0, 20)) is True
        assert lessor_of.is_held(ctx, s, P(10, 20)) is False
        assert held(lessor_of, s, P(0, 20)) == [P(10, 20)]  # the looks hold none of it
    assert held(lessor_of, s, P(0, 20)) == [P(0, 20)]


def test_is_held_is_false_after_wait_free_saw_an_overrunning_holders_lease_end(
    backend: Backend, lessor_of: Lessor, section: Sections
) -> None:
    s = section()
    ctx = Context.background().with_timeout(backend.expiry_bound(backend.unit) + 30)
    with lessor_of.lease(s, P(0, 10), backend.unit) as lease:  # never given back in time
        assert lessor_of.is_held(ctx, s, P(5, 6)) is True
        assert lessor_of.wait_free(ctx, s, P(0, 100)) is True  # the lease ended
        assert time.monotonic() >= lease.deadline
        assert lessor_of.is_held(ctx, s, P(0, 100)) is False  # and no look counts it


def test_is_held_with_a_done_ctx_raises_its_error_never_false(
    lessor_of: Lessor, section: Sections
) -> None:
    s = section()
    expired = Context.background().with_deadline(time.monotonic() - 1)
    cancelled = Context.background()
    cancelled.cancel()
    for ctx, error in ((expired, DeadlineExceeded), (cancelled, Cancelled)):
        for part in (P(0, 10), P(5, 5)):  # nothing held, and an empty part: still raised
            with pytest.raises(error):
                lessor_of.is_held(ctx, s, part)
    with lessor_of.lease(s, P(0, 10), 60):
        with pytest.raises(DeadlineExceeded):
            lessor_of.is_held(expired, s, P(0, 10))


def test_is_held_raises_the_ctx_error_when_ctx_ends_inside_the_backend() -> None:
    class Slow(ThirdParty):
        def _is_held(self, ctx: Context, section_id: str, part: Partition) -> bool:
            ctx.wait()
            ctx.raise_if_done()
            raise AssertionError("unreachable")

    ctx = Context.background()
    timer = threading.Timer(0.05, ctx.cancel)
    timer.start()
    with pytest.raises(Cancelled):
        Slow().is_held(ctx, "s", P(0, 10))
    timer.join()


@pytest.mark.parametrize(
    ("section_id", "part"),
    [("", P(0, 1)), (5, P(0, 1)), (None, P(0, 1)), ("s", "0_1"), ("s", (0, 1)), ("s", None)],
)
def test_is_held_checks_its_arguments_as_lease_does(
    lessor_of: Lessor, section_id: object, part: object
) -> None:
    with pytest.raises((TypeError, ValueError)) as by_lease:
        lessor_of.lease(section_id, part, 1)  # type: ignore[arg-type]
    for ctx in (Context.background(), Context.background().with_deadline(0)):  # done or not
        with pytest.raises(by_lease.type, match=re.escape(str(by_lease.value))):
            lessor_of.is_held(ctx, section_id, part)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"ctx must be a lessor\.Context"):
        lessor_of.is_held(None, "s", P(0, 1))  # type: ignore[arg-type]


def test_a_backend_without_is_held_says_it_cannot_tell() -> None:
    third = ThirdParty()
    with pytest.raises(NotImplementedError, match=r"ThirdParty lessor .* cannot tell what is held"):
        third.is_held(Context.background(), "s", P(0, 10))
    assert third.is_held(Context.background(), "s", P(5, 5)) is False  # nothing to ask


# -- wait_free: the base class's default, for third-party backends -------------------------------


class ThirdParty(Lessor):
    """A minimal backend: no exclusion at all, and no _wait_free of its own."""

    def __init__(self) -> None:
        self.tokens = 0

    def _acquire(self, ctx: Context, section_id: str, part: Partition, dur: float) -> Grant:
        self.tokens += 1
        return Grant(SortedPartitions([part]), time.monotonic() + dur, self.tokens)

    def _release(self, grant: Grant) -> None:
        pass


def test_default_wait_free_returns_true_after_a_back_off() -> None:
    third = ThirdParty()
    with third.lease("s", P(0, 10), 60):
        t0 = time.monotonic()
        assert third.wait_free(Context.background().with_timeout(60), "s", P(0, 10)) is True
        assert time.monotonic() - t0 >= WAIT_FREE_FIRST  # it waited, it did not spin
    assert third.wait_free(Context.background().with_timeout(60), "s", P(0, 10)) is True


def test_default_back_off_doubles_per_section_up_to_its_cap_and_forgets() -> None:
    backoff = wait_backoff.backoffs(ThirdParty())
    intervals = [backoff.next_interval("a") for _ in range(8)]
    assert intervals == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert WAIT_FREE_FIRST == 0.05 and WAIT_FREE_MAX == 2.0
    assert backoff.next_interval("b") == WAIT_FREE_FIRST  # sections apart
    # A call long after the last one's interval ended is no longer "consecutive".
    backoff._sections["a"] = (WAIT_FREE_MAX, time.monotonic() - WAIT_FREE_MAX - 1)
    assert backoff.next_interval("a") == WAIT_FREE_FIRST
    for n in range(3000):
        backoff.next_interval(f"s{n}")
    assert len(backoff._sections) == 1024  # bounded: the least recently used went first
    assert "s2999" in backoff._sections and "a" not in backoff._sections


def test_default_back_off_state_is_per_lessor_even_a_frozen_one() -> None:
    @dataclasses.dataclass(frozen=True)
    class Frozen(ThirdParty):
        name: str = "x"

    one, two = Frozen(), Frozen()
    assert wait_backoff.backoffs(one).next_interval("s") == WAIT_FREE_FIRST
    assert wait_backoff.backoffs(one).next_interval("s") == 2 * WAIT_FREE_FIRST
    assert wait_backoff.backoffs(two).next_interval("s") == WAIT_FREE_FIRST


def test_default_wait_free_returns_false_when_ctx_ends_first() -> None:
    third = ThirdParty()  # a first call waits WAIT_FREE_FIRST: longer than this ctx lasts
    ctx = Context.background().with_timeout(WAIT_FREE_FIRST / 5)
    assert third.wait_free(ctx, "s", P(0, 10)) is False
    cancelled = Context.background()
    cancelled.cancel()
    assert third._wait_free(cancelled, "s", P(0, 10)) is False  # the hook waits on ctx


def test_a_context_error_from_a_hook_after_ctx_ended_is_false_not_raised() -> None:
    class Raising(ThirdParty):
        def _wait_free(self, ctx: Context, section_id: str, part: Partition) -> bool:
            ctx.wait()
            ctx.raise_if_done()
            raise AssertionError("unreachable")

    ctx = Context.background()
    timer = threading.Timer(0.05, ctx.cancel)
    timer.start()
    assert Raising().wait_free(ctx, "s", P(0, 10)) is False
    timer.join()

    class Inner(ThirdParty):
        def _wait_free(self, ctx: Context, section_id: str, part: Partition) -> bool:
            raise DeadlineExceeded("an RPC's own deadline")  # the caller's ctx is not done

    with pytest.raises(DeadlineExceeded, match="an RPC's own deadline"):
        Inner().wait_free(Context.background(), "s", P(0, 10))


# -- a failed give-back --------------------------------------------------------------------------


class FailingRelease(ThirdParty):
    def _release(self, grant: Grant) -> None:
        raise Unavailable("etcd did not answer; the lease ends at its expiry, 3.0s from now")


def test_a_failed_release_is_one_warning_line_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("DEBUG", logger="lessor"), FailingRelease().lease("s", P(0, 10), 60):
        pass
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    (warning,) = warnings
    assert warning.exc_info is None and "\n" not in warning.getMessage()
    assert "release failed: etcd did not answer" in warning.getMessage()
