"""The "memory" aio lessor: one table with the sync one, wait_free without polling or
blocking the loop, is_held."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import lessor
import lessor.aio
from lessor import Context, MemoryLessor, Partition
from lessor.aio import AsyncMemoryLessor
from lessor.memory_table import LeaseTable

P = Partition


class CountingTable(LeaseTable):
    """A table that counts the looks of wait_free (a poll would look again and again) and
    tells when a wait has begun."""

    def __init__(self) -> None:
        super().__init__()
        self.watches = 0
        self.watching = threading.Event()

    @contextmanager
    def watch(self, ctx: Context, section_id: str, part: Partition) -> Iterator[Context | None]:
        self.watches += 1
        with super().watch(ctx, section_id, part) as wake:
            self.watching.set()
            yield wake


async def test_sync_and_async_memory_lessors_share_the_process_table() -> None:
    ctx = Context.background()
    sync, aio = lessor.get(ctx, "memory"), lessor.aio.get(ctx, "memory")
    assert isinstance(sync, MemoryLessor) and isinstance(aio, AsyncMemoryLessor)
    assert aio.table is sync.table
    assert lessor.aio.get(ctx, "memory") is aio
    with sync.lease("shared", P(0, 10), 60) as held_sync:
        async with aio.lease("shared", P(0, 20), 60) as held_async:
            assert held_async.partitions == [P(10, 20)]
            assert held_async.token > held_sync.token  # one counter
            with sync.lease("shared", P(0, 30), 60) as rest:
                assert rest.partitions == [P(20, 30)]
    assert AsyncMemoryLessor().table is not sync.table  # a private one is private


async def test_wait_free_wakes_when_a_sync_holder_in_another_thread_gives_back() -> None:
    table = CountingTable()
    sync, aio = MemoryLessor(table), AsyncMemoryLessor(table)
    holder = sync.lease("s", P(0, 10), 60)
    holder.__enter__()
    try:
        waiting = asyncio.create_task(aio.wait_free(Context.background(), "s", P(5, 15)))
        while not table.watching.is_set():  # the loop is free while wait_free waits
            await asyncio.sleep(0)
        assert not waiting.done()
    finally:
        giver = threading.Thread(target=holder.__exit__, args=(None, None, None))
        giver.start()
    assert await asyncio.wait_for(waiting, 30) is True
    giver.join()
    assert table.watches == 1  # one look, then one wake-up: no polling
    assert table._waiters == {}


async def test_wait_free_returns_at_the_deadline_of_a_holder_that_overruns_it() -> None:
    table = CountingTable()
    sync, aio = MemoryLessor(table), AsyncMemoryLessor(table)
    with sync.lease("s", P(0, 10), 0.2) as lease:  # never given back in time
        assert await aio.wait_free(Context.background().with_timeout(30), "s", P(0, 10)) is True
        assert time.monotonic() >= lease.deadline
        assert await aio.is_held(Context.background(), "s", P(0, 10)) is False
    assert table.watches == 1


async def test_wait_free_is_false_when_ctx_is_cancelled_or_runs_out() -> None:
    aio = AsyncMemoryLessor()
    async with aio.lease("s", P(0, 10), 60):
        ctx = Context.background()
        waiting = asyncio.create_task(aio.wait_free(ctx, "s", P(0, 10)))
        await asyncio.sleep(0)
        threading.Thread(target=ctx.cancel).start()
        assert await asyncio.wait_for(waiting, 30) is False
        short = Context.background().with_timeout(0.05)
        assert await aio.wait_free(short, "s", P(0, 10)) is False
        assert short.deadline is not None and time.monotonic() >= short.deadline
    assert aio.table._waiters == {}


async def test_wait_free_true_at_once_when_nothing_of_part_is_held() -> None:
    aio = AsyncMemoryLessor()
    ctx = Context.background().with_timeout(60)
    assert await aio.wait_free(ctx, "s", P(0, 10)) is True
    async with aio.lease("s", P(0, 10), 60):
        assert await aio.wait_free(ctx, "s", P(10, 20)) is True
        assert await aio.wait_free(ctx, "s", P(3, 3)) is True


async def test_a_cancelled_wait_free_task_leaves_nothing_behind() -> None:
    table = CountingTable()
    aio = AsyncMemoryLessor(table)
    async with aio.lease("s", P(0, 10), 60):
        waiting = asyncio.create_task(aio.wait_free(Context.background(), "s", P(0, 10)))
        while not table.watching.is_set():
            await asyncio.sleep(0)
        waiting.cancel()
        try:
            await waiting
        except asyncio.CancelledError:
            pass
        else:
            raise AssertionError("the cancel did not propagate")
    assert table._waiters == {}


async def test_is_held_sees_sync_and_async_holders() -> None:
    table = LeaseTable()
    sync, aio = MemoryLessor(table), AsyncMemoryLessor(table)
    ctx = Context.background()
    assert await aio.is_held(ctx, "s", P(0, 100)) is False
    with sync.lease("s", P(10, 20), 60):
        assert await aio.is_held(ctx, "s", P(15, 16)) is True
        async with aio.lease("s", P(30, 40), 60):
            assert sync.is_held(ctx, "s", P(35, 36)) is True
            assert await aio.is_held(ctx, "s", P(20, 30)) is False
        assert await aio.is_held(ctx, "s", P(30, 40)) is False
    assert await aio.is_held(ctx, "s", P(0, 100)) is False
