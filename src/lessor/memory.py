"""The ``"memory"`` lessor: the reference semantics, in one process.

Leases live in a dict guarded by one lock. A lease expires at its deadline on the
:func:`time.monotonic` clock, which no wall-clock step can move. Tokens come from one counter
per lessor, so they increase across all its sections.

``lessor.get(ctx, "memory")`` returns one lessor shared by the whole process, so independent
callers in one process exclude each other; ``MemoryLessor()`` makes a private one.

:meth:`~lessor.contract.Lessor.wait_free` notes the leases of the section that hold some key of
``part`` and waits until one of them is given back or reaches its deadline (a memory lease ends
at its deadline), or until ``ctx`` is done, without polling. A plain
:class:`threading.Condition` could be notified by every give-back, but nothing would notify it
when ``ctx`` is cancelled, and :class:`~lessor.context.Context` has no callback. So the waiter
waits on a *child context* of ``ctx`` instead, whose deadline is the earliest deadline of the
leases it watches, and registers it with the section: a give-back of a watched lease cancels
it. Cancelling ``ctx`` cancels the child too, and ``ctx``'s own deadline caps the child's, so
every way the wait can end wakes the one event the waiter blocks on.

:meth:`~lessor.contract.Lessor.is_held` looks at the same leases under the same lock: whether
one of them holds a key of ``part`` and has not reached its deadline.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass

from lessor.context import Context
from lessor.contract import Grant, Lessor
from lessor.partition import Partition, SortedPartitions, SortedPartitionsBuilder
from lessor.registry import register

__all__ = ["MemoryLessor", "factory"]


@dataclass(frozen=True, slots=True)
class _Entry:
    partitions: SortedPartitions
    expiry: float


@dataclass(frozen=True, slots=True, eq=False)
class _Waiter:
    """A ``wait_free`` in progress: the tokens it watches, and the context it waits on."""

    tokens: frozenset[int]
    wake: Context


class MemoryLessor(Lessor):
    """An in-process lessor; thread-safe."""

    backend = "memory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sections: dict[str, dict[int, _Entry]] = {}
        self._waiters: dict[str, set[_Waiter]] = {}
        self._tokens = itertools.count(1)

    def _acquire(self, ctx: Context, section_id: str, part: Partition, dur: float) -> Grant:
        now = time.monotonic()
        deadline = now + dur
        if ctx.deadline is not None:
            deadline = min(deadline, ctx.deadline)
        with self._lock:
            entries = self._sections.setdefault(section_id, {})
            free = SortedPartitionsBuilder(part)
            for token, entry in list(entries.items()):
                if entry.expiry <= now:
                    del entries[token]
                elif not free.is_empty():
                    for p in entry.partitions:
                        free.exclude(p)
            parts = free.result()
            token = next(self._tokens)
            if parts:
                entries[token] = _Entry(parts, deadline)
            elif not entries:
                del self._sections[section_id]
        return Grant(parts, deadline, token, handle=section_id)

    def _release(self, grant: Grant) -> None:
        assert isinstance(grant.handle, str)
        with self._lock:
            entries = self._sections.get(grant.handle)
            if entries is not None:
                entries.pop(grant.token, None)
                if not entries:
                    del self._sections[grant.handle]
            for waiter in self._waiters.get(grant.handle, ()):
                if grant.token in waiter.tokens:
                    waiter.wake.cancel()  # sets an event; calls none of our code back

    def _holding(self, section_id: str, part: Partition) -> dict[int, float]:
        """The live leases of the section that hold a key of ``part``: token -> expiry.
        Called with the lock held."""
        now = time.monotonic()
        return {
            token: entry.expiry
            for token, entry in self._sections.get(section_id, {}).items()
            if entry.expiry > now and any(p.overlaps(part) for p in entry.partitions)
        }

    def _is_held(self, ctx: Context, section_id: str, part: Partition) -> bool:
        with self._lock:
            return bool(self._holding(section_id, part))

    def _wait_free(self, ctx: Context, section_id: str, part: Partition) -> bool:
        with self._lock:
            watched = self._holding(section_id, part)
            if not watched:
                return True
            # Done at the first expiry, at ctx's end, or when a watched lease is given back.
            waiter = _Waiter(frozenset(watched), ctx.with_deadline(min(watched.values())))
            self._waiters.setdefault(section_id, set()).add(waiter)
        try:
            while not waiter.wake.wait():
                pass  # an event wait that returned before its deadline: wait again
        finally:
            with self._lock:
                waiters = self._waiters[section_id]
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[section_id]
        # The child is done: a watched lease was given back or expired, or ctx is done.
        return not ctx.done()

    def held(self, section_id: str) -> dict[int, SortedPartitions]:
        """Live leases of a section by token; for inspection and tests."""
        now = time.monotonic()
        with self._lock:
            entries = self._sections.get(section_id, {})
            return {t: e.partitions for t, e in entries.items() if e.expiry > now}


_SHARED = MemoryLessor()


def factory(ctx: Context) -> MemoryLessor:
    """The process-wide memory lessor."""
    return _SHARED


register("memory", factory)
