"""What only the asyncio sweeper does (lessor/aio/sweep.py): a process that overruns its lease
is cancelled at the deadline, and the end of run (its context, or a cancel of its task)
cancels and awaits every task it started. The cases it shares with the synchronous sweeper
run against both in tests/test_sweep.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

import lessor.aio
from lessor import (
    Cancelled,
    Context,
    DeadlineExceeded,
    MemoryLessor,
    Partition,
    ShardReport,
    SweepStats,
)
from lessor.aio import AsyncLessor, AsyncMemoryLessor
from lessor.aio.sweep_waits import AsyncWaits, observes
from lessor.contract import Grant
from lessor.memory_table import LeaseTable
from tests.support.sweep import AsyncCounting, FirstShardFirst, NotingTable

P = Partition
SPACE = Partition.universe(2)

LATE = 0.05
"""How long after its deadline a process that overruns it may still run."""


async def forever() -> None:
    await asyncio.Event().wait()


def our_tasks() -> set[asyncio.Task[object]]:
    """The tasks of the running loop but the test's own."""
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


async def test_a_process_that_overruns_its_lease_is_cancelled_at_the_deadline() -> None:
    found: list[tuple[ShardReport, BaseException]] = []
    stopped: list[float] = []
    batches: list[Sequence[int]] = []
    deadlines: list[float | None] = []

    async def scan(ctx: Context, part: Partition) -> list[int]:
        return [k for k in range(0x10, 0x20) if k in part]

    async def process(ctx: Context, batch: Sequence[int]) -> None:
        batches.append(batch)
        deadlines.append(ctx.deadline)
        try:
            await forever()
        except asyncio.CancelledError:
            stopped.append(time.monotonic())
            raise

    memory = AsyncMemoryLessor()
    sweeper = lessor.aio.Sweeper(memory, "s", SPACE, shards=1, scan=scan, process=process,
                                 lease_seconds=0.2, batch_size=4,
                                 on_error=lambda r, e: found.append((r, e)))  # fmt: skip
    report = await sweeper.sweep_shard(Context.background(), SPACE)
    assert isinstance(report.error, DeadlineExceeded)
    assert found == [(report, report.error)]  # an overrun is a failure: on_error hears of it
    assert batches == [[0x10, 0x11, 0x12, 0x13]]  # no batch after the deadline
    assert (report.processed, report.failed, report.skipped) == (4, 4, 12)
    assert report.token is not None
    (at,) = stopped
    (deadline,) = deadlines
    assert 0 <= at - deadline < LATE, f"process ran {at - deadline:.3f}s past its deadline"
    assert memory.held("s") == {}  # given back
    assert our_tasks() == set()


async def test_cancelling_the_run_context_cancels_a_process_and_is_no_error() -> None:
    ctx = Context.background()
    found: list[BaseException] = []

    async def scan(c: Context, part: Partition) -> list[int]:
        return [k for k in (0x10, 0x9000) if k in part]

    async def process(c: Context, batch: Sequence[int]) -> None:
        ctx.cancel()  # as another thread or task might, while this one still works
        await forever()

    sweeper = lessor.aio.Sweeper(AsyncMemoryLessor(), "s", SPACE, shards=2, scan=scan,
                                 process=process,
                                 on_error=lambda r, e: found.append(e))  # fmt: skip
    stats = await asyncio.wait_for(sweeper.run(ctx), 30)
    assert (stats.shards_swept, stats.processed, stats.errors) == (1, 1, 0)
    assert found == []
    report = await sweeper.sweep_shard(ctx, P(0, 0x8000))
    assert isinstance(report.error, Cancelled)  # a done context sweeps nothing
    assert our_tasks() == set()


class _Busy:
    """A sweeper of SPACE in two shards whose second one is held by a sync holder over
    ``table``: its run keeps a wait on it, and pauses (IDLE) between rounds."""

    def __init__(self, table: LeaseTable, kind: type[AsyncCounting] = AsyncCounting) -> None:
        self.memory = kind(table)
        self.keys = {0x10, 0x8010}

        async def scan(ctx: Context, part: Partition) -> list[int]:
            return sorted(k for k in self.keys if k in part)

        async def process(ctx: Context, batch: Sequence[int]) -> None:
            self.keys.difference_update(batch)

        self.sweeper = lessor.aio.Sweeper(self.memory, "s", SPACE, shards=2, scan=scan,
                                          process=process, idle_pause=3600,
                                          rng=FirstShardFirst())  # fmt: skip


async def waits_running(memory: AsyncCounting, n: int) -> None:
    while memory.calls < n:
        await asyncio.sleep(0.001)


@pytest.mark.parametrize("how", ["context", "task"])
async def test_the_end_of_run_leaves_no_task_behind(how: str) -> None:
    table = NotingTable()
    busy = _Busy(table)
    ctx = Context.background()
    with MemoryLessor(table).lease("s", P(0x8000, 0x9000), 3600):
        run = asyncio.create_task(busy.sweeper.run(ctx))
        await asyncio.wait_for(waits_running(busy.memory, 1), 30)  # a wait is on, in a task
        await asyncio.wait_for(_registered(table, 1), 30)
        assert any(t.get_name().startswith("lessor-sweep-wait") for t in our_tasks())
        if how == "context":
            ctx.cancel()  # as another thread might: the run ends, in its pause
            stats = await asyncio.wait_for(run, 30)
            assert isinstance(stats, SweepStats) and stats.rounds >= 1
        else:
            run.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(run, 30)
    assert our_tasks() == set()  # every wait's task was cancelled and awaited
    assert table.watching == 0


async def _registered(table: NotingTable, n: int) -> None:
    while table.counted.registered < n:
        await asyncio.sleep(0.001)


async def test_a_second_cancel_during_the_clean_up_still_leaves_no_task_behind() -> None:
    table = NotingTable()
    ctx = Context.background()
    stuck = asyncio.Event()

    class Stubborn(AsyncCounting):
        """Its wait_free takes a moment to notice its cancel."""

        async def _wait_free(self, c: Context, section_id: str, part: Partition) -> bool:
            try:
                return await super()._wait_free(c, section_id, part)
            except asyncio.CancelledError:
                stuck.set()
                await asyncio.shield(asyncio.sleep(0.1))
                raise

    busy = _Busy(table, Stubborn)
    with MemoryLessor(table).lease("s", P(0x8000, 0x9000), 3600):
        run = asyncio.create_task(busy.sweeper.run(ctx))
        await asyncio.wait_for(_registered(table, 1), 30)
        run.cancel()
        await asyncio.wait_for(stuck.wait(), 30)  # the clean-up awaits the stubborn wait...
        run.cancel()  # ...and is cancelled again
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(run, 30)
    assert our_tasks() == set()
    assert table.watching == 0


async def test_a_probe_of_a_shard_nobody_holds_costs_one_look() -> None:
    memory = AsyncCounting(LeaseTable())
    waits = AsyncWaits(memory, "s", Context.background(), max_waits=1)
    try:
        shard = P(0, 100)
        assert waits.probe(shard)
        await asyncio.wait_for(asyncio.wait(waits.tasks), 30)
        assert not waits.watching(shard)  # its slot is free again
        assert waits.take_freed() == []  # nothing was held: nothing to sweep
        assert (memory.looks, memory.calls) == (1, 0)
        assert waits.probe(P(100, 200))  # another probe may start: the bound is not used up
    finally:
        await waits.aclose()
    assert our_tasks() == set()


async def test_scan_and_process_must_be_coroutine_functions() -> None:
    found: list[BaseException] = []
    sweeper = lessor.aio.Sweeper(AsyncMemoryLessor(), "s", SPACE, shards=1,
                                 scan=lambda c, p: [1], process=lambda c, b: None,  # type: ignore[arg-type,return-value]
                                 on_error=lambda r, e: found.append(e))  # fmt: skip
    report = await sweeper.sweep_shard(Context.background(), SPACE)
    assert isinstance(report.error, TypeError)
    assert "scan must be a coroutine function (async def), but it returned list: [1]" in str(
        report.error
    )
    assert found == [report.error]


def test_only_a_lessor_that_overrides_both_hooks_observes_its_holders() -> None:
    class Polling(AsyncLessor):
        async def _acquire(
            self, ctx: Context, section_id: str, part: Partition, dur: float
        ) -> Grant:
            raise AssertionError("not leased here")

        async def _release(self, grant: Grant) -> None:
            raise AssertionError("not leased here")

    class WaitsOnly(Polling):
        async def _wait_free(self, ctx: Context, section_id: str, part: Partition) -> bool:
            return True

    class LooksOnly(Polling):
        async def _is_held(self, ctx: Context, section_id: str, part: Partition) -> bool:
            return False

    assert observes(AsyncMemoryLessor())
    for cannot in (Polling(), WaitsOnly(), LooksOnly()):
        assert not observes(cannot), cannot
