"""The ``"memory"`` lessor: the reference semantics, in one process.

:class:`MemoryLessor` is the sync shell around a :class:`~lessor.memory_table.LeaseTable`,
which holds the leases and decides who gets what (and says how ``wait_free`` waits without
polling); :class:`lessor.aio.memory.AsyncMemoryLessor` is the asyncio shell around the same.

``lessor.get(ctx, "memory")`` returns one lessor shared by the whole process, over the table
that ``lessor.aio.get(ctx, "memory")`` uses too, so independent callers in one process exclude
each other, sync or async; ``MemoryLessor()`` makes a private one.

:meth:`~lessor.contract.Lessor.is_held` looks at the leases ``wait_free`` would watch, under
the same lock: whether one of them holds a key of ``part`` and has not reached its deadline.
"""

from __future__ import annotations

from lessor.context import Context
from lessor.contract import Grant, Lessor
from lessor.memory_table import SHARED, OnTable
from lessor.partition import Partition
from lessor.registry import register

__all__ = ["MemoryLessor", "factory"]


class MemoryLessor(OnTable, Lessor):
    """An in-process lessor; thread-safe. Over a private table unless given one (an
    :class:`~lessor.aio.memory.AsyncMemoryLessor` over the same table excludes this one's
    holders, and they its)."""

    backend = "memory"

    def _acquire(self, ctx: Context, section_id: str, part: Partition, dur: float) -> Grant:
        return self._table.acquire(ctx, section_id, part, dur)

    def _release(self, grant: Grant) -> None:
        self._table.release(grant)

    def _is_held(self, ctx: Context, section_id: str, part: Partition) -> bool:
        return self._table.is_held(section_id, part)

    def _wait_free(self, ctx: Context, section_id: str, part: Partition) -> bool:
        with self._table.watch(ctx, section_id, part) as wake:
            while wake is not None and not wake.wait():
                pass  # an event wait that returned before its deadline: wait again
        # Nothing was held, or a watched lease was given back or expired, or ctx is done.
        return not ctx.done()


_SHARED = MemoryLessor(SHARED)


def factory(ctx: Context) -> MemoryLessor:
    """The process-wide memory lessor."""
    return _SHARED


register("memory", factory)
