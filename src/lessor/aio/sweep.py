"""The asyncio sweeper: :class:`lessor.sweep.Sweeper` for asyncio programs.

``lessor.aio.Sweeper(lessor, section_id, key_space, shards=..., scan=ascan, process=aprocess,
key=...)`` takes the same arguments, with the same meaning and the same checks, as
:class:`lessor.sweep.Sweeper`, and keeps every promise documented in :mod:`lessor.sweep`: the
same sweeps, reports (:class:`~lessor.sweep_shard.ShardReport`,
:class:`~lessor.sweep_run.SweepStats`), waits and probes, decided by the same steps
(:mod:`lessor.sweep_ops`), which this class performs in the event loop. What differs:

* ``lessor`` is a :class:`lessor.aio.AsyncLessor`, or the id of one registered with
  :func:`lessor.aio.register` (resolved with :func:`lessor.aio.get`).
* ``scan`` and ``process`` are coroutine functions: ``async def scan(ctx, shard)`` and
  ``async def process(lease_ctx, batch)``. :meth:`Sweeper.sweep_shard` and
  :meth:`Sweeper.run` are coroutines.
* **The lease's deadline is enforced.** ``process`` runs under the lease
  (:meth:`AsyncLessor.lease <lessor.aio.contract.AsyncLessor.lease>`), so at the lease's
  deadline, or when ``ctx`` is cancelled, it is cancelled where it awaits: a ``process`` that
  overruns can no longer be overtaken by the next holder while it still runs (unless it
  shields itself on purpose). The sweep's report then has the lease's
  :class:`~lessor.errors.DeadlineExceeded` (or :class:`~lessor.errors.Cancelled`) as its
  ``error``, the cut batch counted in ``failed``; the deadline is reported to ``on_error``,
  the caller's own cancel is not.
* The background waits of :meth:`Sweeper.run` are tasks (:mod:`lessor.aio.sweep_waits`).
  ``run`` ends when ``ctx`` is done (checked between sweeps, as the synchronous one does; a
  sweep under way ends as its lease does), and cancels and awaits every task it started
  before it returns. Cancelling the task that awaits ``run`` propagates
  :class:`asyncio.CancelledError`, after the same clean-up.

``on_error`` stays a plain function, called in the event loop.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TypeVar

from lessor.aio.contract import AsyncLessor
from lessor.aio.registry import get, registered
from lessor.aio.sweep_waits import AsyncWaits, observes
from lessor.context import Context
from lessor.partition import Partition
from lessor.sweep_base import LessorKind, SweeperBase
from lessor.sweep_ops import Op, Pause, Process, Scan, SweepShard, UnderLease, drive_async
from lessor.sweep_run import SweepStats
from lessor.sweep_shard import ShardReport

__all__ = ["Sweeper"]

T = TypeVar("T")

AsyncScanFn = Callable[[Context, Partition], Awaitable[Sequence[T]]]
AsyncProcessFn = Callable[[Context, Sequence[T]], Awaitable[object]]


async def _awaited(what: str, result: object) -> object:
    """Await what ``scan`` or ``process`` (``what``) returned; a clear error if it cannot be."""
    if not inspect.isawaitable(result):
        raise TypeError(
            f"{what} must be a coroutine function (async def), but it returned "
            f"{type(result).__name__}: {result!r:.80}"
        )
    return await result


class Sweeper(SweeperBase[T, AsyncLessor, AsyncScanFn[T], AsyncProcessFn[T]]):
    """Sweeps a key space cut into ``shards`` shards from asyncio code; see the module
    documentation, and :class:`lessor.sweep.Sweeper` for the arguments and the run."""

    lessors = LessorKind(
        AsyncLessor, "a lessor.aio.AsyncLessor or a registered id", registered, get
    )

    async def sweep_shard(self, ctx: Context, shard: Partition, *, level: int = 0) -> ShardReport:
        """Scan ``shard``, lease what was found, process what was granted; report
        (:meth:`lessor.sweep.Sweeper.sweep_shard`)."""
        lessor, steps = self._sweep_steps(ctx, shard, level)
        return self._reported(ctx, await drive_async(steps, partial(self._perform, lessor)))

    async def _perform(self, lessor: AsyncLessor, op: Op) -> object:
        """Carry out one operation of a sweep in the event loop."""
        if isinstance(op, Scan):
            return await _awaited("scan", self._scan(op.ctx, op.shard))
        if isinstance(op, Process):
            return await _awaited("process", self._process(op.ctx, op.batch))
        assert isinstance(op, UnderLease), op
        async with lessor.lease(self.section_id, op.span, self.lease_seconds, ctx=op.ctx) as lease:
            return await drive_async(op.body(lease), partial(self._perform, lessor))

    async def run(self, ctx: Context, *, rounds: int | None = None) -> SweepStats:
        """Sweep every shard in turn, and each one's follow-ups, until ``ctx`` is done or
        ``rounds`` rounds are over (:meth:`lessor.sweep.Sweeper.run`); then cancel and await
        the tasks of its waits."""
        lessor = self._run_lessor(ctx, rounds)
        waits = AsyncWaits(lessor, self.section_id, ctx, max_waits=self.max_waits)
        try:
            steps = self._run_steps(ctx, rounds, waits, observes=observes(lessor))
            stats: SweepStats = await drive_async(steps, partial(self._perform_run, ctx, waits))
            return stats
        finally:
            await waits.aclose()

    async def _perform_run(self, ctx: Context, waits: AsyncWaits, op: Op) -> object:
        """Carry out one operation of the run loop in the event loop."""
        if isinstance(op, SweepShard):
            return await self.sweep_shard(ctx, op.shard, level=op.level)
        assert isinstance(op, Pause), op
        await waits.pause(op.seconds)
        return None
