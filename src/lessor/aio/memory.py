"""The ``"memory"`` asyncio lessor: :class:`AsyncMemoryLessor`, the asyncio shell around a
:class:`~lessor.memory_table.LeaseTable`, as :class:`~lessor.memory.MemoryLessor` is the sync
one.

``lessor.aio.get(ctx, "memory")`` returns one lessor shared by the whole process, over the
table of ``lessor.get(ctx, "memory")``: sync and async callers in one process exclude each
other. Nothing in it blocks the event loop for longer than the table's lock, and
``wait_free`` waits on a context (:func:`lessor.aio.wait`), never polling.
"""

from __future__ import annotations

from lessor.aio.contract import AsyncLessor
from lessor.aio.registry import register
from lessor.aio.wait import wait
from lessor.context import Context
from lessor.contract import Grant
from lessor.memory_table import SHARED, OnTable
from lessor.partition import Partition

__all__ = ["AsyncMemoryLessor", "factory"]


class AsyncMemoryLessor(OnTable, AsyncLessor):
    """An in-process asyncio lessor; usable from several event loops and threads. Over a
    private table unless given one (a :class:`~lessor.memory.MemoryLessor` over the same
    table excludes this one's holders, and they its)."""

    backend = "memory"

    async def _acquire(self, ctx: Context, section_id: str, part: Partition, dur: float) -> Grant:
        return self._table.acquire(ctx, section_id, part, dur)

    async def _release(self, grant: Grant) -> None:
        self._table.release(grant)

    async def _is_held(self, ctx: Context, section_id: str, part: Partition) -> bool:
        return self._table.is_held(section_id, part)

    async def _wait_free(self, ctx: Context, section_id: str, part: Partition) -> bool:
        with self._table.watch(ctx, section_id, part) as wake:
            if wake is not None:
                await wait(wake)  # returns once wake is done
        # Nothing was held, or a watched lease was given back or expired, or ctx is done.
        return not ctx.done()


_SHARED = AsyncMemoryLessor(SHARED)


def factory(ctx: Context) -> AsyncMemoryLessor:
    """The process-wide asyncio memory lessor (over the sync one's table)."""
    return _SHARED


register("memory", factory)
