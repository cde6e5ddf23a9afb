"""The asyncio shell around the acquisition core: it awaits the core's operations.

The counterpart of ``shell.py`` for one event loop. The core (``core/``) decides and yields
operations (``ops.py``); :class:`AsyncSectionShell` awaits them for one section through an
:class:`~lessor.etcd.aio_transport.AsyncTransport`: the etcd ones as the very calls the
threaded shell makes (``op_calls.py``), a :class:`~lessor.etcd.ops.CleanUp` as a task of its
own (:class:`AsyncCleanUps`, which closing the lessor waits for), a
:class:`~lessor.etcd.ops.Track` as a timer at the grant's deadline (:class:`AsyncReaper`).
Nothing here decides anything: a failed operation, and a cancellation of the awaiting task,
are thrown back into the core, which knows what they mean.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from lessor.aio.wait import wait
from lessor.context import Context
from lessor.etcd import core
from lessor.etcd.aio_timeout import within
from lessor.etcd.aio_transport import AsyncTransport
from lessor.etcd.calls import arun
from lessor.etcd.drive import drive
from lessor.etcd.gate import Gate
from lessor.etcd.keys import SectionKeys
from lessor.etcd.known import Known
from lessor.etcd.leases import LeasePool
from lessor.etcd.op_calls import etcd_calls
from lessor.etcd.ops import CleanUp, Op, Steps, Track, Wait, WaitTurn
from lessor.etcd.reaper import track
from lessor.etcd.state import SectionTxns

__all__ = ["AsyncCleanUps", "AsyncReaper", "AsyncSectionShell"]

log = logging.getLogger("lessor")


class AsyncCleanUps:
    """The clean-up tasks of one lessor: started on demand, awaited when it closes."""

    def __init__(self) -> None:
        self._running: set[asyncio.Task[None]] = set()

    def start(self, run: Coroutine[Any, Any, None]) -> None:
        """Run ``run`` as a task of its own, apart from whoever started it: cancelling that
        one does not cancel the clean-up."""
        task = asyncio.get_running_loop().create_task(run, name="lessor clean-up")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the running clean-ups; whether all ended."""
        deadline = time.monotonic() + timeout
        while self._running:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.wait(set(self._running), timeout=remaining)
        return True


class AsyncReaper:
    """Ends each grant still held at its deadline: a timer per grant, on the running loop,
    that hands it to ``expire`` (the threaded lessor's ``reaper.py`` does the same with one
    thread and a heap). A grant released first makes its timer a no-op
    (:func:`lessor.etcd.core.expire` finds it ended) and is :meth:`forget` -ten."""

    def __init__(self, expire: Callable[[core.Held], None]) -> None:
        self._expire = expire
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._closed = False

    def watch(self, held: core.Held) -> None:
        """End ``held`` at its deadline unless it is released first."""
        if self._closed or id(held) in self._timers:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, held.until - time.monotonic())
        self._timers[id(held)] = loop.call_later(delay, self._due, held)

    def forget(self, held: core.Held) -> None:
        """``held`` was released: its timer is not needed."""
        timer = self._timers.pop(id(held), None)
        if timer is not None:
            timer.cancel()

    def _due(self, held: core.Held) -> None:
        self._timers.pop(id(held), None)
        if not held.ended.claimed:
            self._expire(held)

    def close(self) -> None:
        """Cancel every timer; grants still held are left to their release or etcd lease."""
        self._closed = True
        timers, self._timers = self._timers, {}
        for timer in timers.values():
            timer.cancel()


class AsyncSectionShell:
    """What an asyncio lessor keeps per section: its Txns, what it knows of it, its gate."""

    def __init__(
        self,
        transport: AsyncTransport,
        keys: SectionKeys,
        pool: LeasePool,
        *,
        reaper: AsyncReaper | None = None,
        clean_ups: AsyncCleanUps | None = None,
    ) -> None:
        self.txns = SectionTxns(transport.rpc, keys)
        self.known = Known(keys)
        self.gate: Gate[core.Member] = Gate(lambda m: m.settled)
        self._transport = transport
        self._pool = pool
        self._reaper = reaper
        self._clean_ups = clean_ups if clean_ups is not None else AsyncCleanUps()
        self._calls = etcd_calls(self.txns, pool)

    @property
    def idle(self) -> bool:
        """Nobody acquires it and nothing of ours is pending on it: it may be forgotten."""
        return not self.gate.leading and self.known.idle

    async def drive(self, steps: Steps) -> Any:
        """Await ``steps``' operations until it ends; return what it returns
        (:func:`lessor.etcd.drive.drive`: a failure, or a cancellation of this task that
        arrives while an operation is awaited, is thrown into ``steps``)."""
        return await drive(steps, self.perform)

    async def perform(self, op: Op) -> Any:
        """Carry out one operation; its result, or its failure raised."""
        make = self._calls.get(type(op))
        if make is not None:
            return await arun(self._transport, make(op))
        if isinstance(op, WaitTurn):
            turn: asyncio.Event = op.turn
            with contextlib.suppress(TimeoutError):  # its turn, or time to look again
                await within(turn.wait(), op.seconds)
            return None
        if isinstance(op, Wait):
            ctx = op.wakes_on if isinstance(op.wakes_on, Context) else Context.background()
            await wait(ctx, op.seconds)  # wakes early when the caller cancels
            return None
        if isinstance(op, Track):
            self._track(op)
            return None
        if isinstance(op, CleanUp):
            self.clean_up(op.steps)
            return None
        raise TypeError(f"not an operation of the acquisition core: {op!r}")

    def _track(self, op: Track) -> None:
        track(op.helds, self._reaper)

    def clean_up(self, steps: Steps) -> None:
        """Drive ``steps`` to its end in a task of its own (a failure is logged)."""
        self._clean_ups.start(self._drive_quietly(steps))

    async def _drive_quietly(self, steps: Steps) -> None:
        try:
            await self.drive(steps)
        except Exception:
            log.warning("section=%r: a clean-up failed", self.known.keys.section_id,
                        exc_info=True)  # fmt: skip
