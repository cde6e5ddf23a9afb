"""Ending overrun leases at their deadlines, while their callbacks still run.

A holder's marker is deleted when it releases. One whose callback overruns its deadline must
not keep its ranges any longer: the etcd lease its marker rides on is shared, and renewed for
this process's later acquisitions (``leases.py``), so the marker would live as long as the
process keeps acquiring. A :class:`Reaper` keeps every grant a lessor hands out, by deadline,
and gives each one still unreleased at its deadline to ``expire`` (which deletes its marker,
apart from the caller: :func:`lessor.etcd.core.expire`).

The hot path pays one heap push under a lock. Released grants are not looked for in the heap;
they are dropped when they come due, or when the heap is compacted (once it holds twice as
many entries as at the last compaction). The reaper's thread wakes at most once a
:data:`TICK`, so a grant is ended at most that long after its deadline.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from lessor.etcd.core import Held

__all__ = ["TICK", "Reaper", "track"]

TICK = 0.05
"""The reaper's thread wakes at most this often (seconds): the most a grant's end is late."""

_MIN_COMPACTION = 1024

log = logging.getLogger("lessor")


class Reaper:
    """Hands each grant still held at its deadline to ``expire``, once."""

    def __init__(
        self, expire: Callable[[Held], None], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._expire = expire
        self._clock = clock
        self._wake = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Held]] = []
        self._order = itertools.count()  # ties in deadline never compare two Held
        self._compact_at = _MIN_COMPACTION
        self._wakes_at = float("inf")  # when the thread next looks at the heap
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, held: Held) -> None:
        """End ``held`` at its deadline unless it is released first."""
        with self._wake:
            if self._closed:
                return
            heapq.heappush(self._heap, (held.until, next(self._order), held))
            if len(self._heap) >= self._compact_at:
                self._heap = [e for e in self._heap if not e[2].ended.claimed]
                heapq.heapify(self._heap)
                self._compact_at = max(_MIN_COMPACTION, 2 * len(self._heap))
            if self._thread is None:  # not started yet, out of threads before, or died
                self._start()
            elif held.until < self._wakes_at:
                self._wake.notify()

    def _start(self) -> None:
        """Start the thread (called with the lock held)."""
        thread = threading.Thread(target=self._run, name="lessor reaper", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # out of threads: the grants stay in the heap
            log.warning("could not start the reaper's thread; trying again at the next "
                        "grant", exc_info=True)  # fmt: skip
        else:
            self._thread = thread

    def _run(self) -> None:
        try:
            self._reap()
        finally:
            # Whatever ended it (only an exception set on this thread from outside can): a
            # grant watched meanwhile saw a thread and started none, so a successor takes
            # what the heap holds; with nothing there, the next grant starts one.
            with self._wake:
                if self._thread is threading.current_thread():
                    self._thread = None
                    if self._heap and not self._closed:
                        self._start()

    def _reap(self) -> None:
        last = float("-inf")
        while True:
            due = []
            with self._wake:
                if self._closed:
                    return
                now = self._clock()
                while self._heap and self._heap[0][0] <= now:
                    held = heapq.heappop(self._heap)[2]
                    if not held.ended.claimed:
                        due.append(held)
                if not due:
                    if self._heap:
                        last = now
                        # Not before a tick has passed since the last look: bounded wakes.
                        self._wakes_at = max(self._heap[0][0], last + TICK)
                        self._wake.wait(self._wakes_at - now)
                    else:
                        self._wakes_at = float("inf")
                        self._wake.wait()
                    self._wakes_at = float("inf")
                    continue
            for n, held in enumerate(due):
                try:
                    self._expire(held)
                except BaseException as e:
                    # Not lost: back in the heap, tried again a tick later (by a successor,
                    # if this thread is ending). This thread must not die of an error, or no
                    # later overrun would end at its deadline.
                    with self._wake:
                        for again in due[n:]:
                            heapq.heappush(self._heap, (again.until, next(self._order), again))
                    if not isinstance(e, Exception):
                        raise
                    log.warning("could not end an overrun lease at its deadline; trying "
                                "again", exc_info=True)  # fmt: skip
                    with self._wake:
                        self._wake.wait(TICK)  # close() wakes it
                    break

    def close(self) -> None:
        """Stop the thread; grants still held are left to their release or their etcd lease."""
        with self._wake:
            self._closed = True
            thread, self._thread = self._thread, None
            self._wake.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join()


class _Watcher(Protocol):
    def watch(self, held: Held) -> None: ...


def track(helds: Iterable[Held], reaper: _Watcher | None) -> None:
    """Perform a :class:`~lessor.etcd.ops.Track`: give each of ``helds`` not tracked yet to
    ``reaper`` (this one, or the asyncio shell's timers; None in tests of the core), then mark
    it tracked.

    Watched first, marked after: an exception between the two leaves a grant watched and
    unmarked, which the next Track watches again (harmless: only one end claims it), never one
    marked and unwatched, which no later Track would give the reaper."""
    for held in helds:
        if not held.tracked.claimed:
            if reaper is not None:
                reaper.watch(held)
            held.tracked.claim()
