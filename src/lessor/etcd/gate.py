"""Group commit: a process's concurrent acquisitions of one section share one compare-and-swap.

Every acquisition of a section swaps the same etcd key, so two threads of one process that
swap it at once make one of them fail for nothing, and a thread that keeps losing can starve
while luckier ones keep winning. The gate queues a process's acquisitions of one section in
arrival order. One of them at a time *leads*: it takes every acquisition waiting at that
moment (itself first) and makes one attempt for all of them — one Txn that writes an entry
for each that gets ranges (see ``acquisition.attempt_together``). Those that the attempt does
not settle go back to the front of the queue, in order. When the leader's own acquisition is
settled it hands the lead to the first one still waiting, so nobody's caller waits for
acquisitions other than those queued before it and in the same attempt.

A waiter whose context ends while it is queued (not inside an attempt) withdraws itself; one
inside an attempt waits for that attempt, which is bounded by its own deadline too.

The gate spans only acquisitions, never callbacks: holders run concurrently.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Generic, TypeVar

__all__ = ["Gate", "Waiter"]

T = TypeVar("T")


class Waiter(Generic[T]):
    """One queued acquisition (``item``) and the event that wakes its thread: set once, when
    the item is settled or when its thread is to lead."""

    __slots__ = ("event", "in_attempt", "item", "lead", "settled")

    def __init__(self, item: T) -> None:
        self.item = item
        self.event = threading.Event()
        self.lead = False
        self.settled = False
        self.in_attempt = False


class Gate(Generic[T]):
    """The queue of one section's acquisitions in this process, and who leads it."""

    def __init__(self) -> None:
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

    def put_back(self, waiters: Sequence[Waiter[T]]) -> None:
        """Waiters an attempt did not settle go back to the front, in their order."""
        with self._lock:
            for w in waiters:
                w.in_attempt = False
            self._queue[:0] = waiters

    def settle(self, waiter: Waiter[T]) -> None:
        waiter.settled = True
        waiter.event.set()

    def withdraw(self, waiter: Waiter[T]) -> bool:
        """Take a queued waiter out (its context ended); False while it is inside an attempt
        or already settled."""
        with self._lock:
            if waiter.settled or waiter.in_attempt or waiter.lead:
                return False
            self._queue.remove(waiter)
            return True

    def hand_over(self, leader: Waiter[T]) -> None:
        """``leader`` is done: the first waiter still queued leads next."""
        with self._lock:
            if leader in self._queue:  # it gave up between attempts
                self._queue.remove(leader)
            leader.lead = False
            first = self._next_leader()
        if first is not None:
            first.event.set()

    def leave(self, waiter: Waiter[T]) -> bool:
        """``waiter``'s thread stops waiting (an exception reached it): out of the queue, and
        the lead passed on if it had it. False while it is inside an attempt, whose outcome
        is still to come."""
        with self._lock:
            if waiter.in_attempt:
                return False
            if waiter in self._queue:
                self._queue.remove(waiter)
            first = self._next_leader() if waiter.lead else None
        if first is not None:
            first.event.set()
        return True

    def _next_leader(self) -> Waiter[T] | None:
        if not self._queue:
            self._leading = False
            return None
        first = self._queue[0]
        first.lead = True
        return first
