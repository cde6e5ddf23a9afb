"""The decision state of the ``"memory"`` lessors: who holds what, in one process.

A :class:`LeaseTable` is what the sync :class:`~lessor.memory.MemoryLessor` and the asyncio
:class:`~lessor.aio.memory.AsyncMemoryLessor` are shells around: the leases of each section,
the token counter, and the ``wait_free`` calls in progress, guarded by one lock. Two lessors
over one table exclude each other, whichever world they serve: :data:`SHARED` is the table of
the registered ``"memory"`` lessors, sync and async.

A lease expires at its deadline on the :func:`time.monotonic` clock, which no wall-clock step
can move. Tokens come from one counter per table, so they increase across all its sections.

``wait_free`` notes the leases of the section that hold some key of ``part`` and waits until
one of them is given back or reaches its deadline (a memory lease ends at its deadline), or
until ``ctx`` is done, without polling. Nothing would notify a plain condition variable when
``ctx`` is cancelled, so the waiter waits on a *child context* of ``ctx`` instead
(:meth:`LeaseTable.watch`), whose deadline is the earliest deadline of the leases it watches,
and the table cancels it when a watched lease is given back. Cancelling ``ctx`` cancels the
child too, and ``ctx``'s own deadline caps the child's, so every way the wait can end ends
the one context the waiter waits on: with :meth:`Context.wait
<lessor.context.Context.wait>` in a thread, with :func:`lessor.aio.wait` on an event loop.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from lessor.context import Context
from lessor.contract import Grant
from lessor.partition import Partition, SortedPartitions, SortedPartitionsBuilder

__all__ = ["SHARED", "LeaseTable", "OnTable", "Waiter"]


@dataclass(frozen=True, slots=True)
class _Entry:
    partitions: SortedPartitions
    expiry: float


@dataclass(frozen=True, slots=True, eq=False)
class Waiter:
    """A ``wait_free`` in progress: the tokens it watches, and the context it waits on."""

    tokens: frozenset[int]
    wake: Context


class LeaseTable:
    """The leases of one set of memory lessors; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sections: dict[str, dict[int, _Entry]] = {}
        self._waiters: dict[str, set[Waiter]] = {}
        self._tokens = itertools.count(1)

    def acquire(self, ctx: Context, section_id: str, part: Partition, dur: float) -> Grant:
        """Grant the sub-ranges of ``part`` that no live lease of the section holds, until
        ``dur`` seconds from now or ``ctx``'s deadline, whichever comes first."""
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

    def release(self, grant: Grant) -> None:
        """Give back what :meth:`acquire` granted, and wake the waiters that watch it."""
        assert isinstance(grant.handle, str)
        with self._lock:
            entries = self._sections.get(grant.handle)
            if entries is not None:
                entries.pop(grant.token, None)
                if not entries:
                    del self._sections[grant.handle]
            for waiter in self._waiters.get(grant.handle, ()):
                if grant.token in waiter.tokens:
                    waiter.wake.cancel()  # wakes the waiter; calls none of our code back

    def _holding(self, section_id: str, part: Partition) -> dict[int, float]:
        """The live leases of the section that hold a key of ``part``: token -> expiry.
        Called with the lock held."""
        now = time.monotonic()
        return {
            token: entry.expiry
            for token, entry in self._sections.get(section_id, {}).items()
            if entry.expiry > now and any(p.overlaps(part) for p in entry.partitions)
        }

    def is_held(self, section_id: str, part: Partition) -> bool:
        """Whether a live lease of the section holds a key of ``part``."""
        with self._lock:
            return bool(self._holding(section_id, part))

    @contextmanager
    def watch(self, ctx: Context, section_id: str, part: Partition) -> Iterator[Context | None]:
        """While inside, a context to wait on that ends when a lease of the section that holds
        a key of ``part`` now is given back or reaches its deadline, or when ``ctx`` is done;
        None when no such lease is held (nothing to wait for)."""
        with self._lock:
            watched = self._holding(section_id, part)
            if not watched:
                waiter = None
            else:
                waiter = Waiter(frozenset(watched), ctx.with_deadline(min(watched.values())))
                self._waiters.setdefault(section_id, set()).add(waiter)
        if waiter is None:
            yield None
            return
        try:
            yield waiter.wake
        finally:
            with self._lock:
                waiters = self._waiters[section_id]
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[section_id]

    def held(self, section_id: str) -> dict[int, SortedPartitions]:
        """Live leases of a section by token; for inspection and tests."""
        now = time.monotonic()
        with self._lock:
            entries = self._sections.get(section_id, {})
            return {t: e.partitions for t, e in entries.items() if e.expiry > now}


class OnTable:
    """What the sync and the asyncio memory lessor share: the table they decide with (a
    private one unless given one) and a look at it."""

    def __init__(self, table: LeaseTable | None = None) -> None:
        self._table = LeaseTable() if table is None else table

    @property
    def table(self) -> LeaseTable:
        """The table of leases this lessor decides with."""
        return self._table

    def held(self, section_id: str) -> dict[int, SortedPartitions]:
        """Live leases of a section by token; for inspection and tests."""
        return self._table.held(section_id)


SHARED = LeaseTable()
"""The process-wide table of the registered ``"memory"`` lessors, sync and async."""
