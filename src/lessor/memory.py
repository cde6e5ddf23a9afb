"""The ``"memory"`` lessor: the reference semantics, in one process.

Leases live in a dict guarded by one lock. A lease expires at its deadline on the
:func:`time.monotonic` clock, which no wall-clock step can move. Tokens come from one counter
per lessor, so they increase across all its sections.

``lessor.get(ctx, "memory")`` returns one lessor shared by the whole process, so independent
callers in one process exclude each other; ``MemoryLessor()`` makes a private one.
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


class MemoryLessor(Lessor):
    """An in-process lessor; thread-safe."""

    backend = "memory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sections: dict[str, dict[int, _Entry]] = {}
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
