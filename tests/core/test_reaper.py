"""The reaper (``lessor.etcd.reaper.Reaper``): grants still held at their deadlines are handed
to ``expire`` once; released ones never are. Real threads, deadlines a moment ahead, and
events to wait on (no test asserts a duration).

Proven here:

* a grant still held at its deadline is handed over, after its deadline, exactly once;
* a grant released before its deadline is never handed over, not even after compaction;
* a grant due earlier than the one the thread sleeps for wakes it;
* ``close`` stops and joins the thread, and later grants are ignored.
"""

from __future__ import annotations

import inspect
import threading
import time
from typing import Any

import pytest

from lessor.etcd import core
from lessor.etcd.keys import SectionKeys
from lessor.etcd.known import Known
from lessor.etcd.leases import EtcdLease
from lessor.etcd.reaper import Reaper

WAIT = 10.0  # seconds an event may take on a loaded machine before the test fails


def held(until: float, seq: int = 1) -> core.Held:
    lease = EtcdLease(id=0x10, ttl=5, t0=time.monotonic())
    return core.Held(Known(SectionKeys.of("/t/", "s")), lease, seq, until)


class Expired:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[core.Held, float]] = []
        self.event = threading.Event()

    def __call__(self, h: core.Held) -> None:
        with self.lock:
            self.seen.append((h, time.monotonic()))
        self.event.set()


def test_a_grant_held_at_its_deadline_is_handed_over_once_after_it() -> None:
    expired = Expired()
    reaper = Reaper(expired)
    try:
        h = held(time.monotonic() + 0.05)
        reaper.watch(h)
        assert expired.event.wait(WAIT)
        ((seen, at),) = expired.seen
        assert seen is h and at >= h.until
    finally:
        reaper.close()
    assert len(expired.seen) == 1


def test_a_released_grant_is_never_handed_over() -> None:
    """The reaper's clock stands still while the grants are watched and released (on a loaded
    machine, watching 3000 took longer than their deadline, and one came due, rightly handed
    over, before the test released it); then it moves past every deadline."""
    clock = StoppedClock()
    expired = Expired()
    reaper = Reaper(expired, clock=clock)
    try:
        released = [held(clock() + 0.01, seq) for seq in range(3000)]  # compacts
        for h in released:
            reaper.watch(h)
            assert h.ended.claim()
        marker = held(clock() + 0.1, 9999)  # due after all of them
        reaper.watch(marker)
        clock.move(1.0)
        assert expired.event.wait(WAIT)
    finally:
        reaper.close()
    assert [h for h, _ in expired.seen] == [marker]


class StoppedClock:
    """A clock that stands still until moved."""

    def __init__(self) -> None:
        self._now = time.monotonic()

    def __call__(self) -> float:
        return self._now

    def move(self, seconds: float) -> None:
        self._now += seconds


def test_an_earlier_grant_wakes_the_thread() -> None:
    expired = Expired()
    reaper = Reaper(expired)
    try:
        late = held(time.monotonic() + 3600.0, 1)
        reaper.watch(late)  # the thread now sleeps for an hour
        soon = held(time.monotonic() + 0.05, 2)
        reaper.watch(soon)
        assert expired.event.wait(WAIT)
        assert [h for h, _ in expired.seen] == [soon]
    finally:
        reaper.close()


def reapers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "lessor reaper"}


def test_close_joins_the_thread_and_ignores_later_grants() -> None:
    expired = Expired()
    reaper = Reaper(expired)
    before = reapers()  # other tests' lessors may have theirs
    reaper.watch(held(time.monotonic() + 3600.0))
    ours = reapers() - before
    assert len(ours) == 1
    reaper.close()
    assert not any(t.is_alive() for t in ours)
    reaper.watch(held(time.monotonic() - 1.0))
    assert reapers() - before == set()
    assert expired.seen == []


class Died(BaseException):
    """An exception set on the reaper's thread from outside (PyThreadState_SetAsyncExc)."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # Died
def test_a_thread_that_dies_loses_no_grant_not_even_one_watched_as_it_dies() -> None:
    """Third review: a grant watched while the dying thread had left its loop but not yet
    cleared itself saw a thread, started none, and was never ended; the grant whose expire
    raised was lost too. Now the dying thread hands the heap to a successor."""
    ended: dict[int, threading.Event] = {1: threading.Event(), 2: threading.Event()}
    raised: list[int] = []

    def expire(h: core.Held) -> None:
        if h.seq == 1 and not raised:
            raised.append(1)
            raise Died()
        ended[h.seq].set()

    reaper = Reaper(expire)
    src, first = inspect.getsourcelines(Reaper._run)
    finally_line = first + next(i for i, t in enumerate(src) if "with self._wake:" in t)
    dying, go = threading.Event(), threading.Event()

    def local(frame: Any, event: str, arg: Any) -> Any:
        if event == "line" and frame.f_lineno == finally_line and not dying.is_set():
            dying.set()
            go.wait(WAIT)  # the dying thread, held just before it clears itself
        return local

    threading.settrace(lambda f, e, a: local if f.f_code is Reaper._run.__code__ else None)
    try:
        reaper.watch(held(time.monotonic() + 0.05, 1))  # starts the (traced) thread
    finally:
        threading.settrace(None)  # type: ignore[arg-type]
    try:
        assert dying.wait(WAIT), "the thread never died of the exception"
        reaper.watch(held(time.monotonic() + 0.1, 2))  # while a dying thread is still set
        go.set()
        assert ended[2].wait(WAIT), "the grant watched while the thread died was never ended"
        assert ended[1].wait(WAIT), "the grant whose expire the exception cut was lost"
    finally:
        go.set()
        reaper.close()
