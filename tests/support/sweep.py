"""Doubles for the sweep tests, in memory (``tests/test_sweep.py``, ``tests/aio/test_sweep.py``)
and on etcd (``tests/etcd/test_sweep.py``), and the two flavours of sweeper those cases run
against: the synchronous :class:`lessor.Sweeper` and :class:`lessor.aio.Sweeper`
(:class:`Flavour`)."""

from __future__ import annotations

import abc
import asyncio
import random
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import lessor.aio
from lessor import Context, Lessor, MemoryLessor, Partition, ShardReport, Sweeper, SweepStats
from lessor.aio import AsyncLessor, AsyncMemoryLessor, wait
from lessor.contract import Grant
from lessor.memory_table import LeaseTable
from tests.support.sync_over_aio import LoopThread


class Calls:
    """Counts the calls of wait_free (``calls``), of is_held (``looks``) and the waits a
    :class:`NotingTable` registered (``registered``), so that a test can await the n-th."""

    def __init__(self) -> None:
        self.calls = 0
        self.looks = 0
        self.registered = 0
        self._changed = threading.Condition()

    def note(self, what: str) -> None:
        with self._changed:
            setattr(self, what, getattr(self, what) + 1)
            self._changed.notify_all()

    def await_count(self, what: str, n: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: getattr(self, what) >= n, timeout=timeout)


class Counted:
    """What a counting lessor shows of its :class:`Calls`."""

    counted: Calls

    @property
    def calls(self) -> int:
        return self.counted.calls

    @property
    def looks(self) -> int:
        return self.counted.looks

    @property
    def registered(self) -> int:
        return self.counted.registered

    def await_calls(self, n: int, timeout: float = 60.0) -> bool:
        return self.counted.await_count("calls", n, timeout)

    def await_registered(self, n: int, timeout: float = 30.0) -> bool:
        """Until ``n`` waits have read the holders they wait for (so a test gives back only
        after that)."""
        return self.counted.await_count("registered", n, timeout)


class CountsCalls(Counted, Lessor):
    """A mixin before a lessor class: counts the calls of wait_free and is_held."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counted = Calls()

    def is_held(self, ctx: Context, section_id: str, part: Partition) -> bool:
        self.counted.note("looks")
        return super().is_held(ctx, section_id, part)

    def wait_free(self, ctx: Context, section_id: str, part: Partition) -> bool:
        self.counted.note("calls")
        return super().wait_free(ctx, section_id, part)


class AsyncCountsCalls(Counted, AsyncLessor):
    """:class:`CountsCalls` before an asyncio lessor class."""

    async def is_held(self, ctx: Context, section_id: str, part: Partition) -> bool:
        self.counted.note("looks")
        return await super().is_held(ctx, section_id, part)

    async def wait_free(self, ctx: Context, section_id: str, part: Partition) -> bool:
        self.counted.note("calls")
        return await super().wait_free(ctx, section_id, part)


class NotingTable(LeaseTable):
    """A lease table that notes each wait_free that has read the holders it waits for, and
    counts those inside now."""

    def __init__(self) -> None:
        super().__init__()
        self.counted = Calls()
        self.watching = 0  # the wait_free calls inside now

    @contextmanager
    def watch(self, ctx: Context, section_id: str, part: Partition) -> Iterator[Context | None]:
        self.watching += 1
        try:
            with super().watch(ctx, section_id, part) as wake:
                if wake is not None:
                    self.counted.note("registered")
                yield wake
        finally:
            self.watching -= 1


class FirstShardFirst(random.Random):
    """Rounds start at the first shard."""

    def randrange(self, *args: Any, **kwargs: Any) -> int:
        return 0


# -- the sync lessors of the flavours -----------------------------------------------------------


class Counting(CountsCalls, MemoryLessor):
    pass


class _Polling(CountsCalls):
    """A third-party backend over ``table``: no _wait_free nor _is_held of its own."""

    def __init__(self, table: LeaseTable) -> None:
        super().__init__()
        self.table = table

    def _acquire(self, ctx: Context, section_id: str, part: Partition, dur: float) -> Grant:
        return self.table.acquire(ctx, section_id, part, dur)

    def _release(self, grant: Grant) -> None:
        self.table.release(grant)


class _Slow(Counting):
    def __init__(self, table: LeaseTable, delay: float) -> None:
        super().__init__(table)
        self.delay = delay

    def _is_held(self, ctx: Context, section_id: str, part: Partition) -> bool:
        ctx.wait(self.delay)
        ctx.raise_if_done()
        return super()._is_held(ctx, section_id, part)

    def _wait_free(self, ctx: Context, section_id: str, part: Partition) -> bool:
        return not ctx.wait(self.delay) and super()._wait_free(ctx, section_id, part)


# -- the asyncio lessors of the flavours --------------------------------------------------------


class AsyncCounting(AsyncCountsCalls, AsyncMemoryLessor):
    def __init__(self, table: LeaseTable) -> None:
        super().__init__(table)
        self.counted = Calls()


class _AsyncPolling(AsyncCountsCalls):
    def __init__(self, table: LeaseTable) -> None:
        self.table = table
        self.counted = Calls()

    async def _acquire(self, ctx: Context, section_id: str, part: Partition, dur: float) -> Grant:
        return self.table.acquire(ctx, section_id, part, dur)

    async def _release(self, grant: Grant) -> None:
        self.table.release(grant)


class _AsyncSlow(AsyncCounting):
    def __init__(self, table: LeaseTable, delay: float) -> None:
        super().__init__(table)
        self.delay = delay

    async def _is_held(self, ctx: Context, section_id: str, part: Partition) -> bool:
        await wait(ctx, self.delay)
        ctx.raise_if_done()
        return await super()._is_held(ctx, section_id, part)

    async def _wait_free(self, ctx: Context, section_id: str, part: Partition) -> bool:
        return not await wait(ctx, self.delay) and await super()._wait_free(ctx, section_id, part)


# -- the flavours -------------------------------------------------------------------------------


class SweeperUnderTest:
    """A sweeper of either flavour, driven from the test's thread: ``call`` carries out what
    a method of the sweeper returns (a coroutine on the flavour's loop, for aio)."""

    def __init__(self, sweeper: Any, call: Callable[[Any], Any]) -> None:
        self.sweeper = sweeper
        self._call = call

    @property
    def shards(self) -> Any:
        return self.sweeper.shards

    def sweep_shard(self, ctx: Context, shard: Partition, *, level: int = 0) -> ShardReport:
        report: ShardReport = self._call(self.sweeper.sweep_shard(ctx, shard, level=level))
        return report

    def run(self, ctx: Context, *, rounds: int | None = None) -> SweepStats:
        stats: SweepStats = self._call(self.sweeper.run(ctx, rounds=rounds))
        return stats

    def record_reports(self) -> list[ShardReport]:
        """From now on, the report of each sweep ``run`` makes goes into the list returned."""
        reports: list[ShardReport] = []
        original = self.sweeper.sweep_shard

        def recording(ctx: Context, shard: Partition, *, level: int = 0) -> Any:
            made = original(ctx, shard, level=level)
            if isinstance(made, ShardReport):
                reports.append(made)
                return made
            return _noted(made, reports)

        self.sweeper.sweep_shard = recording
        return reports


async def _noted(report: Awaitable[ShardReport], reports: list[ShardReport]) -> ShardReport:
    reports.append(await report)
    return reports[-1]


def in_thread(fn: Callable[[Context, Any], Any]) -> Callable[[Context, Any], Awaitable[Any]]:
    """``fn`` (a test's scan or process, which may block) as a coroutine function: called in a
    thread, so that the event loop goes on meanwhile."""

    async def call(ctx: Context, arg: Any) -> Any:
        return await asyncio.to_thread(fn, ctx, arg)

    return call


def _counting(lessor_: Counted, table: LeaseTable) -> Any:
    if isinstance(table, NotingTable):
        lessor_.counted = table.counted
    return lessor_


class Flavour(abc.ABC):
    """One kind of sweeper, with the memory lessors it sweeps with; ``name`` is the test id."""

    name: str
    cls: type[Any]  # the sweeper class
    memory_cls: type[Any]  # its memory lessor class
    _counting_cls: type[Any]
    _polling_cls: type[Any]
    _slow_cls: type[Any]

    def memory(self, table: LeaseTable | None = None) -> Any:
        """A counting memory lessor of this flavour over ``table`` (a new one if None); over
        a :class:`NotingTable`, it counts the waits that table registered."""
        table = LeaseTable() if table is None else table
        return _counting(self._counting_cls(table), table)

    def polling(self, table: LeaseTable) -> Any:
        """A counting lessor over ``table`` that observes no holder (a third party's)."""
        return _counting(self._polling_cls(table), table)

    def slow(self, table: LeaseTable, delay: float) -> Any:
        """:meth:`memory`, answering every look and every wait ``delay`` seconds late."""
        return _counting(self._slow_cls(table, delay), table)

    def sweeper(
        self,
        lessor_: Any,
        section_id: str,
        key_space: Partition,
        *,
        scan: Callable[[Context, Partition], Sequence[Any]],
        process: Callable[[Context, Sequence[Any]], object],
        **kw: Any,
    ) -> SweeperUnderTest:
        """A sweeper of this flavour; ``scan`` and ``process`` are plain functions."""
        made = self.cls(lessor_, section_id, key_space, scan=self._callback(scan),
                        process=self._callback(process), **kw)  # fmt: skip
        return SweeperUnderTest(made, self._call)

    @abc.abstractmethod
    def _callback(self, fn: Callable[[Context, Any], Any]) -> Callable[[Context, Any], Any]:
        """A test's plain scan or process, as this flavour's sweeper takes it."""

    @abc.abstractmethod
    def _call(self, made: Any) -> Any:
        """What a method of this flavour's sweeper returned, carried out."""

    @abc.abstractmethod
    def waits(self) -> list[str]:
        """The names of the waits and probes of this flavour's sweepers still running."""

    @abc.abstractmethod
    def join_waits(self, kind: str = "") -> None:
        """Until the waits (of ``kind``: "wait" or "probe") that run now have returned."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop what the flavour runs."""


class SyncFlavour(Flavour):
    name = "sync"
    cls = Sweeper
    memory_cls = MemoryLessor
    _counting_cls = Counting
    _polling_cls = _Polling
    _slow_cls = _Slow

    def _callback(self, fn: Callable[[Context, Any], Any]) -> Callable[[Context, Any], Any]:
        return fn

    def _call(self, made: Any) -> Any:
        return made

    def waits(self) -> list[str]:
        return [t.name for t in _wait_threads()]

    def join_waits(self, kind: str = "") -> None:
        for thread in _wait_threads():
            if thread.name.startswith(f"lessor-sweep-{kind}"):
                thread.join(30)
                assert not thread.is_alive(), f"{thread.name} did not end"

    def close(self) -> None:
        pass  # nothing runs but what each test joins


def _wait_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("lessor-sweep-")]


class AioFlavour(Flavour):
    """The asyncio sweeper on an event loop in a thread of its own; the test's scan and
    process run in threads (:func:`in_thread`)."""

    name = "aio"
    cls = lessor.aio.Sweeper
    memory_cls = AsyncMemoryLessor
    _counting_cls = AsyncCounting
    _polling_cls = _AsyncPolling
    _slow_cls = _AsyncSlow

    def __init__(self) -> None:
        self.loop = LoopThread()

    def _callback(self, fn: Callable[[Context, Any], Any]) -> Callable[[Context, Any], Any]:
        return in_thread(fn)

    def _call(self, made: Any) -> Any:
        return self.loop.run(made)

    def waits(self) -> list[str]:
        return self.loop.run(_wait_task_names())

    def join_waits(self, kind: str = "") -> None:
        self.loop.run(asyncio.wait_for(_join_tasks(f"lessor-sweep-{kind}"), 30))

    def close(self) -> None:
        self.loop.close()


async def _wait_task_names() -> list[str]:
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("lessor-sweep-")]


async def _join_tasks(prefix: str) -> None:
    tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith(prefix)]
    if tasks:
        await asyncio.wait(tasks)
