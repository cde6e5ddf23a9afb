"""What one :meth:`lessor.aio.Sweeper.run <lessor.aio.sweep.Sweeper.run>` waits for in the
background, a task each: :mod:`lessor.sweep_waits`'s waits (denied parts and probes, the same
decisions, from the same :class:`~lessor.sweep_waits.WaitBook` and
:func:`~lessor.sweep_waits.watch`), performed in the event loop.

Every wait is a task of :class:`AsyncWaits`, and its context a child of the run's. A wait that
is ended (replaced, dropped by a regular visit, or by :meth:`AsyncWaits.aclose`) has its
context and its task cancelled; :meth:`AsyncWaits.aclose` then awaits every task it started,
so that no task outlives the run.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import nullcontext

from lessor.aio.contract import AsyncLessor
from lessor.aio.wait import wait as wait_on
from lessor.context import Context
from lessor.sweep_ops import IsHeld, Op, Sleep, WaitFree, drive_async
from lessor.sweep_waits import JOIN_SECONDS, BookedWaits, Wait, overrides_hooks, watch

__all__ = ["AsyncWaits", "observes"]

log = logging.getLogger("lessor.sweep")


def observes(lessor: AsyncLessor) -> bool:
    """Whether ``lessor`` observes its holders, so that it can answer a probe: its backend
    overrides both :meth:`~lessor.aio.contract.AsyncLessor._wait_free` and
    :meth:`~lessor.aio.contract.AsyncLessor._is_held`."""
    return overrides_hooks(lessor, AsyncLessor)


class AsyncWaits(BookedWaits):
    """The waits of one asyncio run, a task each; see the module documentation. Its methods
    but :meth:`pause` and :meth:`aclose` never block: call them from the run's event loop."""

    def __init__(
        self, lessor: AsyncLessor, section_id: str, ctx: Context, *, max_waits: int
    ) -> None:
        super().__init__(ctx, max_waits, nullcontext())  # one loop: nothing to lock
        self._lessor = lessor
        self._section_id = section_id
        self._running: dict[Wait, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # every task started and not yet ended

    @property
    def tasks(self) -> frozenset[asyncio.Task[None]]:
        """The tasks of the waits that have not ended yet."""
        return frozenset(self._tasks)

    def _launch(self, wait: Wait, ctx: Context, name: str) -> None:
        task = asyncio.create_task(self._wait(wait, ctx), name=name)
        self._running[wait] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _end(self, waits: list[Wait]) -> None:
        super()._end(waits)
        for wait in waits:
            self._running.pop(wait).cancel()

    async def _wait(self, wait: Wait, ctx: Context) -> None:
        freed = False
        try:
            freed = await drive_async(watch(wait, ctx), self._perform)
        finally:
            self._running.pop(wait, None)
            self._returned(wait, freed)

    async def _perform(self, op: Op) -> object:
        if isinstance(op, IsHeld):
            return await self._lessor.is_held(op.ctx, self._section_id, op.part)
        if isinstance(op, WaitFree):
            return await self._lessor.wait_free(op.ctx, self._section_id, op.part)
        assert isinstance(op, Sleep), op
        return await wait_on(op.ctx, op.seconds)

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less: until the run's context is done or a wait returns True."""
        pause = self._pause_context(seconds)
        if pause is not None:
            try:
                await wait_on(pause)
            finally:
                self._paused()

    async def aclose(self) -> None:
        """End every wait, and await their tasks (for at most
        :data:`~lessor.sweep_waits.JOIN_SECONDS`: a task that ignores its cancel is logged and
        left). A cancel of the calling task while it awaits them is raised once they ended."""
        self._closing()
        pending = set(self._tasks)
        for task in pending:
            task.cancel()
        self._running.clear()
        loop = asyncio.get_running_loop()
        limit = loop.time() + JOIN_SECONDS
        interrupted: asyncio.CancelledError | None = None
        while pending and (left := limit - loop.time()) > 0:
            try:
                _, pending = await asyncio.wait(pending, timeout=left)
            except asyncio.CancelledError as e:
                interrupted = e  # the clean-up goes on: the tasks end at their next step
        for task in pending:
            log.warning("%s did not end with its cancel: a wait_free ignores it", task.get_name())
        if interrupted is not None:
            raise interrupted
