"""Group commit: a process's concurrent acquisitions of one section share one compare-and-swap.

Every acquisition of a section swaps the same etcd key, so two threads of one process that
swap it at once make one of them fail for nothing, and a thread that keeps losing can starve
while luckier ones keep winning. The gate queues a process's acquisitions of one section in
arrival order. One of them at a time *leads*: it takes every acquisition waiting at that
moment (itself first) and makes one attempt for all of them — one Txn that writes an entry
for each that gets ranges (``core/attempt.py``). Those that the attempt does not settle go back
to the front of the queue, in order. When the leader's own acquisition is settled it hands the
lead to the first one still waiting, so nobody's caller waits for acquisitions other than
those queued before it and in the same attempt.

The gate is pure bookkeeping under one lock: it never blocks and never calls etcd. It wakes a
waiter through the ``wake`` callback the shell gave it (a thread's event, a task's future).

Every way out is here, so that the queue always has a leader while it has waiters:

* :meth:`withdraw`: a queued waiter whose time is up leaves (if it was just handed the lead,
  the lead passes on).
* :meth:`leave`: a waiter whose thread an exception reached *departs*. Queued, it leaves as
  with withdraw. Inside an attempt, nobody waits for it: :meth:`finish` hands it to the leader
  as an orphan, to be settled and to have whatever it was granted given back.

The gate spans only acquisitions, never callbacks: holders run concurrently.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Gate", "Waiter"]

T = TypeVar("T")


class Waiter(Generic[T]):
    """One queued acquisition (``item``) and how to wake its thread (``wake``): called once
    the item is settled, or when its thread is to lead."""

    __slots__ = ("departed", "in_attempt", "item", "lead", "wake")

    def __init__(self, item: T, wake: Callable[[], object]) -> None:
        self.item = item
        self.wake = wake
        self.lead = False
        self.in_attempt = False
        self.departed = False


class Gate(Generic[T]):
    """The queue of one section's acquisitions in this process, and who leads it.

    ``settled(item)`` tells whether an attempt has settled an item.
    """

    def __init__(self, settled: Callable[[T], bool]) -> None:
        self._settled = settled
        self._lock = threading.Lock()
        self._leading = False
        self._queue: list[Waiter[T]] = []  # arrival order; empty whenever nobody leads

    @property
    def queued(self) -> int:
        """How many acquisitions wait in the queue (not counting those inside an attempt)."""
        with self._lock:
            return len(self._queue)

    @property
    def leading(self) -> bool:
        """Whether some acquisition leads (makes attempts) now."""
        with self._lock:
            return self._leading

    def join(self, waiter: Waiter[T]) -> bool:
        """Queue ``waiter``; True when it leads at once (nobody else was acquiring)."""
        with self._lock:
            self._queue.append(waiter)
            if self._leading:
                return False
            self._leading = True
            waiter.lead = True
            return True

    def take(self, limit: int) -> list[Waiter[T]]:
        """The leader takes the first ``limit`` waiters (itself first) for one attempt."""
        with self._lock:
            batch = self._queue[:limit]
            del self._queue[:limit]
            for w in batch:
                w.in_attempt = True
            return batch

    def finish(self, batch: Sequence[Waiter[T]]) -> list[Waiter[T]]:
        """The attempt for ``batch`` is over: the settled are woken, the others go back to the
        front of the queue in their order. Returns the departed: the leader's to settle.

        Calling it again for the same batch does nothing more (an exception that reached the
        leader in the middle of it makes the leader call it again on its way out)."""
        with self._lock:
            pending = [w for w in batch if w.in_attempt]
            back = [w for w in pending
                    if not (w.departed or self._settled(w.item) or w in self._queue)]  # fmt: skip
            self._queue[:0] = back
            for w in pending:
                w.in_attempt = False
        for w in pending:
            if not w.departed and not w.lead and self._settled(w.item):
                w.wake()
        return [w for w in pending if w.departed]

    def withdraw(self, waiter: Waiter[T]) -> bool:
        """Take a queued waiter out (its time is up); False while it is inside an attempt, or
        settled, or already out."""
        with self._lock:
            if waiter.in_attempt or waiter.departed or waiter not in self._queue:
                return False
            self._queue.remove(waiter)
            first = self._pass_lead(waiter)
        if first is not None:
            first.wake()
        return True

    def leave(self, waiter: Waiter[T]) -> bool:
        """``waiter``'s thread stops waiting (an exception reached it). True: it is out of the
        queue (the lead passed on if it had it), and its item is its thread's own to settle
        or give back. False: it is inside an attempt, or had already left; the leader settles
        it and gives back what it is granted."""
        with self._lock:
            if waiter.departed:
                return False
            waiter.departed = True
            if waiter.in_attempt:
                return False
            if waiter in self._queue:
                self._queue.remove(waiter)
            first = self._pass_lead(waiter)
        if first is not None:
            first.wake()
        return True

    def hand_over(self, leader: Waiter[T]) -> None:
        """``leader`` is done: the first waiter still queued leads next."""
        with self._lock:
            if leader in self._queue:  # it gave up between attempts
                self._queue.remove(leader)
            first = self._pass_lead(leader)
        if first is not None:
            first.wake()

    def _pass_lead(self, waiter: Waiter[T]) -> Waiter[T] | None:
        """If ``waiter`` led, the next leader (to wake), else None. Under the lock."""
        if not waiter.lead:
            return None
        waiter.lead = False
        if not self._queue:
            self._leading = False
            return None
        first = self._queue[0]
        first.lead = True
        return first
