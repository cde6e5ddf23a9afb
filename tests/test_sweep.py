"""The sweepers against the memory lessors, each case for the synchronous lessor.Sweeper and
for lessor.aio.Sweeper alike (the ``flavour`` fixture): splitting, only-in filtering,
deadlines, errors, arguments, sweepers of both kinds sharing one store, denied shards swept
again as soon as they come free (wait_free), and probes that find, follow and take over a
holder nobody was denied (lessor.sweep_waits). The units of the synchronous waits (Waits,
ProbeCycle) are tested here too; tests/aio/test_sweep.py has what only asyncio does."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

import lessor
import lessor.aio
from lessor import Context, MemoryLessor, Partition, Unavailable, fencing_token, sweep_waits
from lessor.contract import Grant
from lessor.memory_table import LeaseTable
from lessor.sweep import MAX_LEVEL, ShardReport, Sweeper
from lessor.sweep_waits import ProbeCycle, Waits
from lessor.testing import Holding, find_overlaps, find_token_inversions
from tests.support.sweep import (
    AioFlavour,
    FirstShardFirst,
    Flavour,
    NotingTable,
    SweeperUnderTest,
    SyncFlavour,
)

P = Partition
SPACE = Partition.universe(2)  # keys 0..0xffff


@pytest.fixture(params=[SyncFlavour, AioFlavour], ids=["sync", "aio"])
def flavour(request: pytest.FixtureRequest) -> Iterator[Flavour]:
    made: Flavour = request.param()
    try:
        yield made
    finally:
        made.close()


class Store:
    """A sorted set of keys standing in for a table of reminders; process deletes them."""

    def __init__(self, keys: Sequence[int]) -> None:
        self._lock = threading.Lock()
        self.keys = set(keys)
        self.batches: list[list[int]] = []
        self.scans: list[Partition] = []
        self.tokens: list[int | None] = []

    def scan(self, ctx: Context, part: Partition) -> list[int]:
        with self._lock:
            self.scans.append(part)
            return sorted(k for k in self.keys if k in part)

    def process(self, ctx: Context, batch: Sequence[int]) -> None:
        with self._lock:
            self.batches.append(list(batch))
            self.tokens.append(fencing_token(ctx))
            self.keys.difference_update(batch)

    @property
    def processed(self) -> list[int]:
        return [k for b in self.batches for k in b]


def make(flavour: Flavour, store: Store, lessor_: Any = None, **kw: Any) -> SweeperUnderTest:
    """A sweeper of ``store`` (its scan and, unless ``process`` is given, its process)."""
    kw.setdefault("shards", 4)
    kw.setdefault("idle_pause", 0)
    kw.setdefault("process", store.process)
    return flavour.sweeper(
        lessor_ if lessor_ is not None else flavour.memory(),
        "reminders",
        SPACE,
        scan=store.scan,
        **kw,
    )


def errors_into(found: list[tuple[ShardReport, BaseException]]) -> Callable[..., None]:
    return lambda report, err: found.append((report, err))


class Raising(LeaseTable):
    """A lease table whose every acquisition raises what ``fail()`` returns."""

    def __init__(self, fail: Callable[[Context], BaseException]) -> None:
        super().__init__()
        self.fail = fail

    def acquire(self, ctx: Context, section_id: str, part: Partition, dur: float) -> Grant:
        raise self.fail(ctx)


# -- the basic sweep -----------------------------------------------------------------------------


def test_one_round_processes_every_item_once_in_key_order_batches(flavour: Flavour) -> None:
    keys = random.Random(1).sample(range(SPACE.high), 900)
    store = Store(keys)
    stats = make(flavour, store, batch_size=50).run(Context.background(), rounds=1)
    assert sorted(store.processed) == sorted(keys)
    assert store.keys == set()
    assert all(len(b) <= 50 and b == sorted(b) for b in store.batches)
    assert stats.processed == stats.scanned == 900
    assert (stats.shards_swept, stats.skipped, stats.errors, stats.rounds) == (4, 0, 0, 1)


def test_sweep_shard_leases_the_span_of_what_it_found_and_passes_the_token(
    flavour: Flavour,
) -> None:
    store = Store([0x1005, 0x1100, 0x2FFF])
    memory = flavour.memory()
    seen: list[dict[int, Any]] = []

    def spy(ctx: Context, batch: Sequence[int]) -> None:
        seen.append(memory.held("reminders"))
        store.process(ctx, batch)

    sweeper = make(flavour, store, memory, process=spy)
    report = sweeper.sweep_shard(Context.background(), sweeper.shards[0])
    assert report.shard == P(0, 0x4000)
    assert report.leased == (P(0x1005, 0x3000),)  # span_inclusive(first, last)
    assert seen == [{report.token: [P(0x1005, 0x3000)]}]
    assert store.tokens == [report.token]
    assert (report.scanned, report.processed, report.skipped, report.error) == (3, 3, 0, None)
    assert memory.held("reminders") == {}  # given back


def test_an_empty_shard_takes_no_lease(flavour: Flavour) -> None:
    table = Raising(lambda ctx: AssertionError("leased an empty shard"))
    report = make(flavour, Store([]), flavour.memory(table)).sweep_shard(
        Context.background(), P(0, 0x4000)
    )
    assert (report.scanned, report.leased, report.token, report.error) == (0, (), None, None)


def test_items_with_their_own_key_function(flavour: Flavour) -> None:
    @dataclass(frozen=True)
    class Reminder:
        id: str

    rows = [Reminder(f"{k:04x}") for k in (0x0001, 0x00A0, 0x8000, 0xFFFE)]
    got: list[Reminder] = []
    sweeper = flavour.sweeper(
        flavour.memory(),
        "reminders",
        SPACE,
        shards=2,
        scan=lambda ctx, part: [r for r in rows if int(r.id, 16) in part],
        process=lambda ctx, batch: got.extend(batch),
        key=lambda r: int(r.id, 16),
        idle_pause=0,
    )
    sweeper.run(Context.background(), rounds=1)
    assert sorted(got, key=lambda r: r.id) == rows


def test_run_starts_at_a_random_shard_and_rotates_in_key_order(flavour: Flavour) -> None:
    firsts = set()
    for seed in range(20):
        store = Store([])
        make(flavour, store, shards=4, rng=random.Random(seed)).run(Context.background(), rounds=2)
        shards = [s.low // 0x4000 for s in store.scans]
        assert len(shards) == 8
        assert shards == [(shards[0] + i) % 4 for i in range(8)]
        firsts.add(shards[0])
    assert firsts == {0, 1, 2, 3}


# -- splitting -----------------------------------------------------------------------------------


def test_a_crowded_shard_keeps_the_first_items_and_splits_the_rest_after_them(
    flavour: Flavour,
) -> None:
    keys = list(range(0, 0x4000, 4))  # 4096 evenly spread keys in the first shard
    store = Store(keys)
    sweeper = make(flavour, store, split_threshold=1000, secondary_shards=16)
    report = sweeper.sweep_shard(Context.background(), P(0, 0x4000))
    assert (report.scanned, report.processed, report.deferred, report.skipped) == (
        4096,
        1000,
        3096,
        0,
    )
    assert store.processed == keys[:1000]
    assert report.leased == (P(0, keys[999] + 1),)
    # educated_split_after: the same density after the cut, ~1000 items per follow-up.
    assert report.follow_ups == tuple(P(0, 0x4000).educated_split_after("f9c", 1000, 1000, 16))
    assert report.follow_ups[0].low == keys[999] + 1
    assert report.follow_ups[-1].high == 0x4000
    assert len(report.follow_ups) == 4
    for part in report.follow_ups:
        follow = sweeper.sweep_shard(Context.background(), part, level=1)
        assert follow.follow_ups == ()
        assert follow.error is None
    assert sorted(store.processed) == keys


def test_no_split_below_two_levels_deep_even_when_the_guess_was_wrong(flavour: Flavour) -> None:
    # Sparse at the start, dense at the end: every educated guess is too optimistic.
    keys = list(range(10)) + list(range(0x3F00, 0x3F00 + 300))
    store = Store(keys)
    sweeper = make(flavour, store, split_threshold=10, secondary_shards=4, shards=4)
    reports = sweeper.record_reports()
    sweeper.run(Context.background(), rounds=1)
    assert sorted(store.processed) == keys  # one round: the follow-ups were swept at once
    assert {r.level for r in reports} == {0, 1, 2}
    assert all(r.follow_ups == () for r in reports if r.level == MAX_LEVEL)
    deepest = [r for r in reports if r.level == MAX_LEVEL and r.scanned > 10]
    assert deepest, "the data should have overflowed a level-2 shard"
    assert all(r.processed == r.scanned and r.deferred == 0 for r in deepest)
    assert all(r.processed <= 10 for r in reports if r.level < MAX_LEVEL)


def test_items_sharing_the_cut_key_stay_with_the_cut(flavour: Flavour) -> None:
    @dataclass(frozen=True)
    class Row:
        key: int
        n: int

    rows = [Row(1, 0), Row(2, 0), Row(2, 1), Row(2, 2), Row(3, 0)]
    got: list[Row] = []
    sweeper = flavour.sweeper(
        flavour.memory(),
        "s",
        SPACE,
        shards=1,
        scan=lambda ctx, part: [r for r in rows if r.key in part],
        process=lambda ctx, batch: got.extend(batch),
        key=lambda r: r.key,
        split_threshold=2,
    )
    report = sweeper.sweep_shard(Context.background(), SPACE)
    assert got == rows[:4]
    assert report.deferred == 1
    assert report.follow_ups[0].low == 3


# -- only what was granted -----------------------------------------------------------------------


def test_only_keys_inside_the_granted_ranges_are_processed(flavour: Flavour) -> None:
    keys = [0x100, 0x200, 0x300, 0x400, 0x500, 0x600]
    store = Store(keys)
    table = LeaseTable()
    sweeper = make(flavour, store, flavour.memory(table), shards=1, batch_size=1)
    # Another sweeper's lease: a synchronous holder over the same table.
    with MemoryLessor(table).lease("reminders", P(0x250, 0x450), 60):
        report = sweeper.sweep_shard(Context.background(), SPACE)
        assert report.leased == (P(0x100, 0x250), P(0x450, 0x601))
        assert store.processed == [0x100, 0x200, 0x500, 0x600]
        assert (report.scanned, report.processed, report.skipped) == (6, 4, 2)
        assert report.error is None
        assert report.denied == P(0x300, 0x401)  # the span of the items it did not get
        # Another section is independent of that lease.
        other = flavour.sweeper(
            flavour.memory(table), "other", SPACE, shards=1, scan=store.scan,
            process=lambda c, b: None,
        )  # fmt: skip
        assert other.sweep_shard(Context.background(), SPACE).leased == (P(0x300, 0x401),)
    report = sweeper.sweep_shard(Context.background(), SPACE)  # the other holder is gone
    assert sorted(store.processed) == keys
    assert (report.scanned, report.processed, report.skipped) == (2, 2, 0)
    assert report.denied is None


def test_nothing_granted_processes_nothing(flavour: Flavour) -> None:
    store = Store([0x10, 0x20])
    table = LeaseTable()
    with MemoryLessor(table).lease("reminders", SPACE, 60):
        report = make(flavour, store, flavour.memory(table)).sweep_shard(
            Context.background(), P(0, 0x4000)
        )
    assert (report.leased, report.processed, report.skipped, report.error) == ((), 0, 2, None)
    assert report.token is not None
    assert report.denied == P(0x10, 0x21)
    assert store.batches == []


def test_a_lessor_named_by_id_is_resolved_with_its_registry(flavour: Flavour) -> None:
    ctx = Context.background()
    shared = lessor.get(ctx, "memory")  # the sync and async "memory" lessors share a table
    store = Store([0x10, 0x20])
    sweeper = make(flavour, store, "memory")
    with shared.lease("reminders", P(0x10, 0x11), 60):
        report = sweeper.sweep_shard(ctx, P(0, 0x4000))
    assert store.processed == [0x20]
    assert report.skipped == 1


# -- deadlines -----------------------------------------------------------------------------------


@pytest.mark.parametrize("raise_when_done", [False, True], ids=["returns", "raises"])
def test_no_batch_is_handed_over_once_the_lease_deadline_has_passed(
    raise_when_done: bool,
) -> None:
    # Synchronous only: under asyncio a process that overruns is cancelled at the deadline
    # (tests/aio/test_sweep.py).
    keys = list(range(0x10, 0x20))
    handed: list[list[int]] = []
    deadlines: list[float | None] = []
    found: list[tuple[ShardReport, BaseException]] = []

    def slow(ctx: Context, batch: Sequence[int]) -> None:
        handed.append(list(batch))
        deadline = ctx.deadline
        assert deadline is not None
        # Leased before this call, for at most lease_seconds.
        assert deadline <= time.monotonic() + 0.3
        deadlines.append(deadline)
        assert not ctx.done()
        ctx.wait()  # works until the lease runs out
        if raise_when_done:
            ctx.raise_if_done()

    sweeper = Sweeper(
        MemoryLessor(),
        "s",
        SPACE,
        shards=1,
        scan=lambda ctx, part: [k for k in keys if k in part],
        process=slow,
        lease_seconds=0.3,
        batch_size=4,
        on_error=errors_into(found),
    )
    report = sweeper.sweep_shard(Context.background(), SPACE)
    assert handed == [keys[:4]]
    assert len(deadlines) == 1
    assert (report.processed, report.skipped) == (4, 12)
    assert report.failed == (4 if raise_when_done else 0)
    assert report.error is None and found == []


def test_the_callers_deadline_caps_the_lease(flavour: Flavour) -> None:
    deadlines: list[float | None] = []
    ctx = Context.background().with_timeout(5)
    sweeper = flavour.sweeper(
        flavour.memory(),
        "s",
        SPACE,
        shards=1,
        scan=lambda c, part: [1, 2],
        process=lambda c, batch: deadlines.append(c.deadline),
        lease_seconds=60,
    )
    sweeper.sweep_shard(ctx, SPACE)
    assert ctx.deadline is not None
    assert deadlines == [ctx.deadline]


# -- errors ---------------------------------------------------------------------------------------


def test_process_errors_are_reported_and_the_sweep_goes_on(flavour: Flavour) -> None:
    keys = [0x10, 0x20, 0x30, 0x5000, 0x9000]
    store = Store(keys)
    found: list[tuple[ShardReport, BaseException]] = []
    poison = RuntimeError("poisoned")

    def process(ctx: Context, batch: Sequence[int]) -> None:
        if 0x20 in batch:
            raise poison
        store.process(ctx, batch)

    sweeper = make(flavour, store, batch_size=1, on_error=errors_into(found), process=process)
    stats = sweeper.run(Context.background(), rounds=2)
    assert sorted(store.processed) == [0x10, 0x30, 0x5000, 0x9000]  # its neighbours too
    assert store.keys == {0x20}  # stays for a later sweep
    assert [err for _, err in found] == [poison, poison]
    report = found[0][0]
    assert report.shard == P(0, 0x4000)
    assert (report.scanned, report.processed, report.failed, report.skipped) == (3, 3, 1, 0)
    assert stats.errors == 2
    assert stats.rounds == 2


def test_the_default_on_error_logs(flavour: Flavour, caplog: pytest.LogCaptureFixture) -> None:
    def boom(ctx: Context, batch: Sequence[int]) -> None:
        raise RuntimeError("boom")

    sweeper = flavour.sweeper(
        flavour.memory(), "s", SPACE, shards=1, scan=lambda c, p: [7], process=boom
    )
    with caplog.at_level("ERROR", logger="lessor.sweep"):
        report = sweeper.sweep_shard(Context.background(), SPACE)
    assert isinstance(report.error, RuntimeError)
    assert "sweep of shard 0_10000" in caplog.text
    assert "boom" in caplog.text


def test_lessor_errors_are_reported_per_shard_and_do_not_end_run(flavour: Flavour) -> None:
    down = flavour.memory(Raising(lambda ctx: Unavailable("etcd is down")))
    store = Store([0x10, 0x5000])
    found: list[tuple[ShardReport, BaseException]] = []
    stats = make(flavour, store, down, on_error=errors_into(found)).run(
        Context.background(), rounds=3
    )
    assert stats.errors == 6
    assert stats.skipped == stats.scanned == 6
    assert all(isinstance(err, Unavailable) for _, err in found)
    assert all(r.leased == () and r.token is None for r, _ in found)
    assert store.keys == {0x10, 0x5000}


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ([0x20, 0x10], "out of order: 0x10 after 0x20"),
        ([0x10, 0x5000], "key 0x5000 outside the shard 0_4000"),
        (["10"], "must be an int"),
        (iter([1, 2]), "scan must return a sequence"),
    ],
)
def test_a_scan_that_breaks_its_contract_is_an_error_processing_nothing(
    flavour: Flavour, result: Any, message: str
) -> None:
    processed: list[Any] = []
    found: list[tuple[ShardReport, BaseException]] = []
    sweeper = flavour.sweeper(
        flavour.memory(),
        "s",
        SPACE,
        shards=4,
        scan=lambda ctx, part: result,
        process=lambda ctx, batch: processed.extend(batch),
        on_error=errors_into(found),
    )
    report = sweeper.sweep_shard(Context.background(), P(0, 0x4000))
    assert processed == []
    assert report.error is not None and message in str(report.error)
    assert report.leased == ()
    assert found == [(report, report.error)]


def test_scan_errors_are_reported(flavour: Flavour) -> None:
    def scan(ctx: Context, part: Partition) -> list[int]:
        raise ConnectionError("database gone")

    found: list[tuple[ShardReport, BaseException]] = []
    sweeper = flavour.sweeper(
        flavour.memory(),
        "s",
        SPACE,
        shards=2,
        scan=scan,
        process=lambda c, b: None,
        on_error=errors_into(found),
        idle_pause=0,
    )
    stats = sweeper.run(Context.background(), rounds=1)
    assert stats.errors == 2
    assert [type(e) for _, e in found] == [ConnectionError, ConnectionError]


# -- ending run ----------------------------------------------------------------------------------


def test_cancelling_the_context_ends_run_and_is_no_error(flavour: Flavour) -> None:
    ctx = Context.background()
    keys = list(range(0, SPACE.high, 0x100))
    store = Store(keys)
    found: list[tuple[ShardReport, BaseException]] = []

    def process(c: Context, batch: Sequence[int]) -> None:
        store.process(c, batch)
        ctx.cancel()

    sweeper = make(flavour, store, batch_size=4, on_error=errors_into(found), process=process)
    stats = sweeper.run(ctx)  # no rounds: only the cancel ends it
    assert len(store.batches) == 1
    assert stats.processed == 4
    assert stats.shards_swept == 1
    assert stats.rounds == 0
    assert found == []


def test_a_cancel_during_acquisition_ends_run_and_is_no_error(flavour: Flavour) -> None:
    ctx = Context.background()

    def cancelling(c: Context) -> BaseException:
        ctx.cancel()
        c.raise_if_done()
        return AssertionError("the context was cancelled")

    found: list[tuple[ShardReport, BaseException]] = []
    store = Store([0x10, 0x5000, 0x9000, 0xD000])  # whichever shard comes first, it leases
    sweeper = make(flavour, store, flavour.memory(Raising(cancelling)), on_error=errors_into(found))
    stats = sweeper.run(ctx)
    assert (stats.shards_swept, stats.errors, stats.processed, stats.rounds) == (1, 0, 0, 0)
    assert found == []


def test_run_ends_at_the_contexts_deadline_while_idle(flavour: Flavour) -> None:
    sweeper = make(flavour, Store([]), idle_pause=30)
    t0 = time.monotonic()
    stats = sweeper.run(Context.background().with_timeout(0.2))
    assert time.monotonic() - t0 < 5  # the idle pause waits on the context, not a sleep
    assert stats.rounds == 1


def test_a_done_context_sweeps_nothing(flavour: Flavour) -> None:
    ctx = Context.background()
    ctx.cancel()
    store = Store([1])
    sweeper = make(flavour, store)
    report = sweeper.sweep_shard(ctx, P(0, 0x4000))
    assert isinstance(report.error, lessor.Cancelled)
    assert store.scans == []
    assert sweeper.run(ctx).shards_swept == 0


def test_idle_pause_only_after_a_round_that_processed_nothing(flavour: Flavour) -> None:
    ctx = Context.background()
    store = Store([0x10])
    sweeper = make(flavour, store, shards=1, idle_pause=0.05)
    t0 = time.monotonic()
    stats = sweeper.run(ctx.with_timeout(30), rounds=3)
    assert stats.rounds == 3
    assert stats.processed == 1
    # round 1 processed; one pause after round 2; none after the last.
    assert 0.05 <= time.monotonic() - t0 < 5


# -- sweepers of both kinds, one store ------------------------------------------------------------


def test_two_aio_sweepers_and_a_sync_one_never_process_one_item_at_once_and_miss_none() -> None:
    keys = random.Random(7).sample(range(SPACE.high), 400)
    pending = set(keys)
    lock = threading.Lock()
    holdings: list[Holding] = []
    finished = threading.Event()

    def scan(ctx: Context, part: Partition) -> list[int]:
        with lock:
            return sorted(k for k in pending if k in part)

    def did(name: str, k: int, start: float, token: int | None) -> None:
        assert token is not None
        with lock:
            pending.discard(k)
            if not pending:
                finished.set()
        end = time.monotonic()
        holdings.append(Holding(name, f"k{k}", (P(k, k + 1),), start, end, token))

    def process(ctx: Context, batch: Sequence[int]) -> None:  # the sync sweeper's
        for k in batch:
            start = time.monotonic()
            if ctx.wait(0.0005):  # a little work, cut short by the deadline
                return
            did("sync", k, start, fencing_token(ctx))

    def aprocess(name: str) -> Callable[[Context, Sequence[int]], Any]:
        async def process(ctx: Context, batch: Sequence[int]) -> None:
            for k in batch:
                start = time.monotonic()
                await asyncio.sleep(0.0005)  # cancelled at the lease's deadline
                did(name, k, start, fencing_token(ctx))

        return process

    async def ascan(ctx: Context, part: Partition) -> list[int]:
        return scan(ctx, part)

    table = LeaseTable()
    settings: dict[str, Any] = {"shards": 8, "batch_size": 5, "split_threshold": 20,
                                "lease_seconds": 0.2, "idle_pause": 0.01}  # fmt: skip
    ctx = Context.background().with_timeout(60)
    aio_sweepers = [
        lessor.aio.Sweeper(lessor.aio.AsyncMemoryLessor(table), "reminders", SPACE, scan=ascan,
                           process=aprocess(f"aio{i}"), rng=random.Random(i), **settings)
        for i in range(2)
    ]  # fmt: skip
    sync_sweeper = Sweeper(MemoryLessor(table), "reminders", SPACE, scan=scan, process=process,
                           rng=random.Random(2), **settings)  # fmt: skip
    done = ctx.with_value("done", None)  # cancelled once nothing is pending

    def until_finished() -> None:
        finished.wait(60)
        done.cancel()

    async def both() -> None:
        await asyncio.gather(*(s.run(done) for s in aio_sweepers))

    threads = [
        threading.Thread(target=until_finished),
        threading.Thread(target=sync_sweeper.run, args=(done,)),
    ]
    for t in threads:
        t.start()
    try:
        asyncio.run(both())
    finally:
        done.cancel()
        for t in threads:
            t.join(60)
    assert not ctx.done(), "the sweepers did not finish within 60 s"
    assert pending == set()
    assert {int(h.section_id[1:]) for h in holdings} == set(keys)
    assert find_overlaps(holdings) == []
    assert find_token_inversions(holdings) == []
    assert {h.holder for h in holdings} == {"aio0", "aio1", "sync"}  # they did share the work


# -- arguments -----------------------------------------------------------------------------------


def _noop(ctx: Context, x: Any) -> list[int]:
    return []


GOOD: dict[str, Any] = {
    "section_id": "s",
    "key_space": SPACE,
    "shards": 4,
    "scan": _noop,
    "process": _noop,
}


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        ({"lessor": 3}, TypeError, "lessor must be"),
        ({"lessor": "no-such-lessor"}, ValueError, "'no-such-lessor' is not registered"),
        ({"section_id": ""}, ValueError, "section_id"),
        ({"section_id": b"s"}, TypeError, "section_id"),
        ({"key_space": "0_100"}, TypeError, "key_space"),
        ({"key_space": P(5, 5)}, ValueError, "key_space"),
        ({"shards": 0}, ValueError, "shards"),
        ({"shards": 2.0}, TypeError, "shards"),
        ({"shards": True}, TypeError, "shards"),
        ({"scan": None}, TypeError, "scan"),
        ({"process": "f"}, TypeError, "process"),
        ({"key": 1}, TypeError, "key"),
        ({"lease_seconds": 0}, ValueError, "lease_seconds"),
        ({"lease_seconds": float("inf")}, ValueError, "lease_seconds"),
        ({"lease_seconds": "60"}, TypeError, "lease_seconds"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"split_threshold": -1}, ValueError, "split_threshold"),
        ({"secondary_shards": 0}, ValueError, "secondary_shards"),
        ({"idle_pause": -1}, ValueError, "idle_pause"),
        ({"max_waits": -1}, ValueError, "max_waits must be >= 0"),
        ({"max_waits": 1.5}, TypeError, "max_waits must be an int"),
        ({"max_waits": None}, TypeError, "max_waits"),
        ({"probes": -1}, ValueError, "probes must be >= 0"),
        ({"probes": 2.0}, TypeError, "probes must be an int"),
        ({"probes": False}, TypeError, "probes must be an int"),
        ({"rng": 42}, TypeError, "rng"),
        ({"on_error": "log"}, TypeError, "on_error"),
    ],
)
def test_bad_arguments_name_what_was_wrong(
    flavour: Flavour, change: dict[str, Any], error: type[Exception], words: str
) -> None:
    args = {"lessor": flavour.memory_cls(), **GOOD, **change}
    with pytest.raises(error, match=words):
        flavour.cls(args.pop("lessor"), args.pop("section_id"), args.pop("key_space"), **args)


def test_a_lessor_of_the_other_world_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match=r"lessor must be a lessor\.Lessor or a registered id"):
        Sweeper(lessor.aio.AsyncMemoryLessor(), **GOOD)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"lessor must be a lessor\.aio\.AsyncLessor or a regis"):
        lessor.aio.Sweeper(MemoryLessor(), **GOOD)  # type: ignore[arg-type]


def test_bad_arguments_to_sweep_shard_and_run(flavour: Flavour) -> None:
    sweeper = flavour.sweeper(flavour.memory(), **GOOD)
    ctx = Context.background()
    with pytest.raises(TypeError, match="ctx"):
        sweeper.sweep_shard(None, P(0, 1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="shard"):
        sweeper.sweep_shard(ctx, "0_1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shard 0_10001 must be a non-empty part"):
        sweeper.sweep_shard(ctx, P(0, 0x10001))
    with pytest.raises(ValueError, match="shard 5_5"):
        sweeper.sweep_shard(ctx, P(5, 5))
    with pytest.raises(ValueError, match="level"):
        sweeper.sweep_shard(ctx, P(0, 1), level=MAX_LEVEL + 1)
    with pytest.raises(TypeError, match="ctx"):
        sweeper.run(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rounds"):
        sweeper.run(ctx, rounds=0)


def test_shards_are_an_even_split_of_the_key_space(flavour: Flavour) -> None:
    sweeper = flavour.cls(flavour.memory_cls(), **{**GOOD, "shards": 3})
    assert sweeper.shards == SPACE.split(3)
    tiny = flavour.cls(flavour.memory_cls(), **{**GOOD, "key_space": P(0, 2), "shards": 8})
    assert tiny.shards == [P(0, 1), P(1, 2)]  # fewer keys than shards: fewer shards


# -- denied shards are swept again as soon as they come free ------------------------------------

IDLE = 3600.0  # the pause after a round that processed nothing: what a re-sweep must beat


class Runner:
    """``sweeper.run(ctx)`` in a thread of its own."""

    def __init__(self, sweeper: SweeperUnderTest, ctx: Context) -> None:
        self.stats: lessor.SweepStats | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(sweeper, ctx))
        self._thread.start()

    def _run(self, sweeper: SweeperUnderTest, ctx: Context) -> None:
        try:
            self.stats = sweeper.run(ctx)
        except BaseException as e:  # surfaced by join()
            self.error = e

    def join(self) -> lessor.SweepStats:
        self._thread.join(30)
        assert not self._thread.is_alive(), "run did not end with its context"
        if self.error is not None:
            raise self.error
        assert self.stats is not None
        return self.stats


class Signalling:
    """A process callback for ``store`` that sets an event, and notes the time, per key."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.events = {k: threading.Event() for k in store.keys}
        self.at: dict[int, float] = {}

    def __call__(self, ctx: Context, batch: Sequence[int]) -> None:
        now = time.monotonic()
        self.store.process(ctx, batch)
        for k in batch:
            self.at[k] = now
            self.events[k].set()


def test_a_partly_granted_shard_is_swept_again_as_soon_as_its_holder_gives_back(
    flavour: Flavour,
) -> None:
    keys = [0x8010, 0x8020, 0x8030]  # all in the second of two shards
    store, table = Store(keys), LeaseTable()
    memory = flavour.memory(table)
    seen = Signalling(store)
    sweeper = make(flavour, store, memory, shards=2, idle_pause=IDLE, rng=FirstShardFirst(),
                   process=seen)  # fmt: skip
    holder = MemoryLessor(table).lease("reminders", P(0x8020, 0x8021), 3600)
    held = holder.__enter__()
    ctx = Context.background()
    runner = Runner(sweeper, ctx)
    try:
        assert seen.events[0x8010].wait(30) and seen.events[0x8030].wait(30)
        # Round 1 got all but 0x8020 and waits for it; round 2 was denied it too (which
        # replaced that wait with its own), and then run pauses for IDLE seconds: the second
        # call means round 2's sweep of the shard is over.
        assert memory.await_calls(2)
        assert not seen.events[0x8020].is_set()
        released = time.monotonic()
        holder.__exit__(None, None, None)
        assert seen.events[0x8020].wait(60), "the shard waited for its next round"
    finally:
        ctx.cancel()
        stats = runner.join()
    assert seen.at[0x8020] - released < IDLE / 60
    assert stats.resweeps == 1  # the pause was cut short by the wake-up
    assert sorted(store.processed) == keys
    assert store.tokens[-1] is not None and store.tokens[-1] > held.token
    assert flavour.waits() == []


def test_a_denied_shard_is_swept_again_when_its_holders_lease_runs_out(flavour: Flavour) -> None:
    keys = [0x8010, 0x8020]
    store, table = Store(keys), LeaseTable()
    memory = flavour.memory(table)
    seen = Signalling(store)
    sweeper = make(flavour, store, memory, shards=2, idle_pause=IDLE, rng=FirstShardFirst(),
                   process=seen)  # fmt: skip
    ctx = Context.background()
    # A holder that never gives back in time (it overruns, or its process hung).
    with MemoryLessor(table).lease("reminders", P(0x8000, 0xC000), 1.0) as dead:
        runner = Runner(sweeper, ctx)
        try:
            assert seen.events[0x8020].wait(60), "the shard waited for its next round"
        finally:
            ctx.cancel()
            stats = runner.join()
        assert min(seen.at.values()) >= dead.deadline  # never while the holder held it
    assert sorted(store.processed) == keys
    # Unless the machine was so slow that the lease had run out before the first sweep, that
    # sweep was denied and the wake-up at the lease's end cut the IDLE pause short.
    assert stats.resweeps == (1 if memory.calls else 0)


class Eager(LeaseTable):
    """A table whose every wait_free is over at once: "worth trying again", every time."""

    @contextmanager
    def watch(self, ctx: Context, section_id: str, part: Partition) -> Iterator[Context | None]:
        yield None


def test_wake_ups_that_free_nothing_sweep_a_shard_at_most_once_more_per_round(
    flavour: Flavour,
) -> None:
    table = Eager()
    store = Store([0x8010])
    sweeper = make(flavour, store, flavour.memory(table), shards=2)
    with MemoryLessor(table).lease("reminders", SPACE, 3600):
        stats = sweeper.run(Context.background().with_timeout(60), rounds=5)
    assert stats.rounds == 5
    assert stats.processed == 0
    assert stats.resweeps <= 5  # one contested shard: at most one wake-up sweep a round
    assert stats.shards_swept == 2 * 5 + stats.resweeps


def test_max_waits_zero_waits_for_nothing(flavour: Flavour) -> None:
    store, table = Store([0x8010, 0x8020]), LeaseTable()
    memory = flavour.memory(table)
    sweeper = make(flavour, store, memory, shards=2, max_waits=0)
    with MemoryLessor(table).lease("reminders", P(0x8020, 0x8021), 3600):
        stats = sweeper.run(Context.background().with_timeout(60), rounds=2)
    assert memory.calls == 0
    assert (stats.resweeps, stats.processed, stats.skipped) == (0, 1, 2)


def test_run_ends_its_waits_when_it_returns(flavour: Flavour) -> None:
    store, table = Store([0x8010]), NotingTable()
    memory = flavour.memory(table)
    # The denied shard first: its wait runs while the other shard is swept.
    sweeper = make(flavour, store, memory, shards=2, rng=StartAt(1))
    with MemoryLessor(table).lease("reminders", SPACE, 3600):
        stats = sweeper.run(Context.background().with_timeout(60), rounds=1)
        assert stats.rounds == 1
        assert memory.calls == 1  # the denied shard's wait was started...
        assert flavour.waits() == []  # ...and ended with run
        assert table.watching == 0


def test_cancelling_run_during_its_pause_ends_its_waits(flavour: Flavour) -> None:
    store, table = Store([0x8010]), NotingTable()
    memory = flavour.memory(table)
    sweeper = make(flavour, store, memory, shards=2, idle_pause=IDLE, rng=FirstShardFirst())
    ctx = Context.background()
    with MemoryLessor(table).lease("reminders", SPACE, 3600):
        runner = Runner(sweeper, ctx)
        assert memory.await_calls(1)  # the last shard of round 1 was denied
        ctx.cancel()  # in its pause, or just before it
        stats = runner.join()
    assert stats.rounds <= 1 and stats.shards_swept == 2
    assert flavour.waits() == []
    assert table.watching == 0


class Broken(LeaseTable):
    """A table on which every wait_free fails."""

    @contextmanager
    def watch(self, ctx: Context, section_id: str, part: Partition) -> Iterator[Context | None]:
        raise Unavailable("no watch today")


def test_a_failing_wait_free_is_logged_and_the_shard_waits_for_its_next_round(
    flavour: Flavour,
) -> None:
    logged = threading.Event()

    class Noting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "to come free failed" in record.getMessage():
                logged.set()

    store, table = Store([0x8010, 0x8020]), Broken()
    found: list[tuple[ShardReport, BaseException]] = []
    sweeper = make(flavour, store, flavour.memory(table), shards=2, idle_pause=IDLE,
                   on_error=errors_into(found))  # fmt: skip
    handler = Noting()
    logging.getLogger("lessor.sweep").addHandler(handler)
    ctx = Context.background()
    try:
        with MemoryLessor(table).lease("reminders", P(0x8020, 0x8021), 3600):
            runner = Runner(sweeper, ctx)
            assert logged.wait(30)
            ctx.cancel()
            stats = runner.join()
    finally:
        logging.getLogger("lessor.sweep").removeHandler(handler)
    assert found == [] and stats.errors == 0  # not a failure of any sweep
    assert store.keys == {0x8020}


def test_a_third_party_backend_polls_and_still_sweeps_a_freed_shard_soon(flavour: Flavour) -> None:
    keys = [0x8010, 0x8020]
    store, table = Store(keys), LeaseTable()
    seen = Signalling(store)
    third = flavour.polling(table)
    sweeper = make(flavour, store, third, shards=2, idle_pause=IDLE, rng=FirstShardFirst(),
                   process=seen)  # fmt: skip
    ctx = Context.background()
    with MemoryLessor(table).lease("reminders", P(0x8020, 0x8021), 3600):
        runner = Runner(sweeper, ctx)
        if not third.await_calls(2):  # rounds 1 and 2 were denied 0x8020 (as above)
            ctx.cancel()
            runner.join()
            pytest.fail("the sweeper did not wait for its denied part")
    # Given back: a poll (at most every 2 s) cuts the IDLE pause short.
    try:
        assert seen.events[0x8020].wait(60), "the shard waited for its next round"
    finally:
        ctx.cancel()
        stats = runner.join()
    assert stats.resweeps >= 1
    assert sorted(store.processed) == keys


# -- probes: a holder nobody was denied is followed, and its shard swept once it is gone ----------


@pytest.fixture
def no_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    """Probes look again at once after a give-back: the holders here take no next lease."""
    monkeypatch.setattr(sweep_waits, "GRACE", 0.0)


class Stepped:
    """A process callback for ``store`` that, for the batches with a key below ``below``,
    waits for a step from the test first (holding its lease): the sweeper stays in such a
    sweep until the test lets it go on. Notes when each key was processed."""

    def __init__(self, store: Store, below: int) -> None:
        self.store = store
        self.below = below
        self.steps = threading.Semaphore(0)
        self.waiting = threading.Semaphore(0)
        self.events = {k: threading.Event() for k in store.keys}
        self.at: dict[int, float] = {}

    def __call__(self, ctx: Context, batch: Sequence[int]) -> None:
        if batch[0] < self.below:
            self.waiting.release()
            assert self.steps.acquire(timeout=30)
        now = time.monotonic()
        self.store.process(ctx, batch)
        for k in batch:
            self.at[k] = now
            self.events[k].set()

    def await_waiting(self) -> None:
        """Until the sweeper waits for a step."""
        assert self.waiting.acquire(timeout=30)

    def run_free(self) -> None:
        self.below = -1
        self.steps.release(100)


class StartAt(random.Random):
    def __init__(self, shard: int) -> None:
        super().__init__()
        self.shard = shard

    def randrange(self, *args: Any, **kwargs: Any) -> int:
        return self.shard


A_KEYS = [0x0010, 0x0020, 0x0030, 0x0040]  # the first of two shards: one item a sweep
B_KEYS = [0x9000, 0x9001]  # the second: held by others, never visited before they are gone


def one_item_a_sweep(
    flavour: Flavour, store: Store, memory: Any, **kw: Any
) -> tuple[SweeperUnderTest, Stepped]:
    """A sweeper of two shards that splits the first into a sweep per item, each of which
    waits for a step from the test."""
    stepped = Stepped(store, below=0x8000)
    kw.setdefault("rng", FirstShardFirst())
    sweeper = make(flavour, store, memory, shards=2, split_threshold=1, secondary_shards=2,
                   batch_size=1, idle_pause=IDLE, process=stepped, **kw)  # fmt: skip
    return sweeper, stepped


def test_wake_ups_follow_progress_more_than_once_a_round(flavour: Flavour) -> None:
    # The round starts in the second shard, where two holders deny it everything, and goes
    # on to the first. Each give-back wakes it within that one round: the sweep after the
    # first one made progress, so the sweeper waits again.
    store, table = Store(A_KEYS + B_KEYS), NotingTable()
    memory, holders = flavour.memory(table), MemoryLessor(table)
    stepped = Stepped(store, below=0x8000)
    sweeper = make(flavour, store, memory, shards=2, split_threshold=2, batch_size=2, probes=0,
                   idle_pause=IDLE, rng=StartAt(1), process=stepped)  # fmt: skip
    first = holders.lease("reminders", P(0x9000, 0x9001), 3600)
    second = holders.lease("reminders", P(0x9001, 0x9002), 3600)
    first.__enter__()
    second.__enter__()
    out: list[lessor.SweepStats] = []
    runner = threading.Thread(
        target=lambda: out.append(sweeper.run(Context.background(), rounds=1))
    )
    runner.start()
    try:
        assert memory.await_registered(1)  # denied both: waits on both
        stepped.await_waiting()  # in the first shard
        first.__exit__(None, None, None)
        flavour.join_waits("wait")
        stepped.steps.release()
        assert stepped.events[0x9000].wait(30)  # swept again at once: 0x9000 done
        assert memory.await_registered(2)  # and waits for 0x9001 again
        stepped.await_waiting()
        second.__exit__(None, None, None)
        flavour.join_waits("wait")
        stepped.steps.release()
        assert stepped.events[0x9001].wait(30), "the second give-back waited for another round"
    finally:
        stepped.run_free()
        runner.join(30)
    (stats,) = out
    assert (stats.rounds, stats.resweeps, stats.processed) == (1, 2, 6)


def test_a_probe_follows_holders_nobody_was_denied_and_sweeps_their_shard_once_all_are_gone(
    flavour: Flavour, no_grace: None
) -> None:
    store, table = Store(A_KEYS + B_KEYS), NotingTable()
    memory, holders = flavour.memory(table), MemoryLessor(table)
    sweeper, stepped = one_item_a_sweep(flavour, store, memory, probes=1)
    one = holders.lease("reminders", P(0x9000, 0x9001), 3600)
    other = holders.lease("reminders", P(0x9001, 0x9002), 3600)
    one.__enter__()
    held = other.__enter__()
    ctx = Context.background()
    runner = Runner(sweeper, ctx)
    try:
        stepped.await_waiting()
        stepped.steps.release()  # 0x0010: the first sweep, which probes the other shard...
        assert memory.await_registered(1)  # ...where the probe finds both holders
        stepped.await_waiting()
        one.__exit__(None, None, None)
        # A give-back while another holder is left: the probe looks again, and waits again.
        assert memory.await_registered(2)
        assert (memory.looks, memory.calls) == (2, 2)
        other.__exit__(None, None, None)
        flavour.join_waits("probe")  # its third look found nothing held: the shard is queued
        assert (memory.looks, memory.calls) == (3, 2)
        stepped.steps.release()  # 0x0020
        assert stepped.events[0x9000].wait(30)
    finally:
        ctx.cancel()
        stepped.run_free()
        stats = runner.join()
    # Swept right after that sweep, before the rest of the first shard (one item a sweep:
    # 0x9001 is a follow-up of it, after those of the first shard).
    assert store.processed[:3] == [0x0010, 0x0020, 0x9000]
    assert store.tokens[2] is not None and store.tokens[2] > held.token
    assert (stats.resweeps, stats.probes) == (1, 1)
    assert flavour.waits() == []


def test_a_probe_sweeps_the_shard_of_a_dead_holder_when_its_lease_runs_out(
    flavour: Flavour, no_grace: None
) -> None:
    store, table = Store(A_KEYS + B_KEYS), NotingTable()
    memory = flavour.memory(table)
    sweeper, stepped = one_item_a_sweep(flavour, store, memory, probes=1)
    dead = MemoryLessor(table).lease("reminders", P(0x9000, 0x9002), 0.5)
    lease = dead.__enter__()  # its holder never gives it back: the lease runs out
    ctx = Context.background()
    runner = Runner(sweeper, ctx)
    try:
        stepped.await_waiting()
        stepped.steps.release()  # 0x0010, then the probe
        assert memory.await_registered(1)
        stepped.await_waiting()
        flavour.join_waits("probe")  # the lease ran out and nothing is held: shard queued
        stepped.steps.release()  # 0x0020
        assert stepped.events[0x9000].wait(30)
    finally:
        ctx.cancel()
        stepped.run_free()
        stats = runner.join()
    assert stepped.at[0x9000] >= lease.deadline
    assert store.processed[:3] == [0x0010, 0x0020, 0x9000]
    assert (stats.resweeps, stats.probes) == (1, 1)


def test_a_probe_of_a_shard_nobody_holds_ends_at_once(flavour: Flavour) -> None:
    store, table = Store([0x0010]), NotingTable()
    memory = flavour.memory(table)
    sweeper = make(flavour, store, memory, shards=2, probes=1, rng=FirstShardFirst())
    stats = sweeper.run(Context.background().with_timeout(60), rounds=1)
    assert (stats.probes, stats.resweeps, stats.processed) == (1, 0, 1)
    # The probe of the other shard: a thread looks once at once; a task has not run before
    # the visit of that shard drops it (tests/aio/test_sweep.py has its one look). No wait.
    looks = 1 if flavour.name == "sync" else 0
    assert (memory.looks, memory.calls, memory.registered) == (looks, 0, 0)
    assert flavour.waits() == []


SLOW = 0.25  # how late a slow lessor answers a look or a wait: longer than any "at once"


def test_a_slow_probe_ends_after_one_look_when_nothing_is_held() -> None:
    # Regression (review: test_slow_probe.py): the probe told "nothing held" from "a holder
    # gave back" by how soon wait_free returned. Answers slower than that made it look again
    # every ~0.45 s forever, never queueing the shard and keeping its max_waits slot.
    flavour = SyncFlavour()
    memory = flavour.slow(NotingTable(), SLOW)
    waits = Waits(memory, "s", Context.background(), max_waits=1)
    try:
        shard = P(0, 100)
        assert waits.probe(shard)
        flavour.join_waits()  # one slow look: 0.25 s
        assert not waits.watching(shard)  # its slot is free again
        assert waits.take_freed() == []  # nothing was held: nothing to sweep
        assert (memory.looks, memory.calls) == (1, 0)
        assert waits.probe(P(100, 200))  # another probe may start: the bound is not used up
    finally:
        waits.close()
    assert flavour.waits() == []


def test_a_slow_probe_follows_a_holder_and_sweeps_its_shard_once_it_gives_back(
    flavour: Flavour,
) -> None:
    store, table = Store(A_KEYS + B_KEYS), NotingTable()
    memory = flavour.slow(table, SLOW)
    sweeper, stepped = one_item_a_sweep(flavour, store, memory, probes=1)
    holder = MemoryLessor(table).lease("reminders", P(0x9000, 0x9002), 3600)
    held = holder.__enter__()
    ctx = Context.background()
    runner = Runner(sweeper, ctx)
    try:
        stepped.await_waiting()
        stepped.steps.release()  # 0x0010: the first sweep, which probes the other shard...
        assert memory.await_registered(1)  # ...where a slow look found the holder: it waits
        stepped.await_waiting()
        holder.__exit__(None, None, None)
        flavour.join_waits("probe")  # a slow look after GRACE found nothing held: queued
        assert (memory.looks, memory.calls) == (2, 1)
        stepped.steps.release()  # 0x0020
        assert stepped.events[0x9000].wait(30)
    finally:
        ctx.cancel()
        stepped.run_free()
        stats = runner.join()
    assert store.processed[:3] == [0x0010, 0x0020, 0x9000]
    assert store.tokens[2] is not None and store.tokens[2] > held.token
    assert (stats.resweeps, stats.probes) == (1, 1)
    assert flavour.waits() == []


def test_probes_follow_only_a_sweep_that_leased_and_leave_out_the_shard_it_swept(
    flavour: Flavour, no_grace: None
) -> None:
    table = NotingTable()
    memory = flavour.memory(table)
    for probes, expected in ((4, 3), (2, 2)):
        sweeper = make(flavour, Store([0x0010]), memory, shards=4, probes=probes,
                       rng=FirstShardFirst())  # fmt: skip
        stats = sweeper.run(Context.background().with_timeout(60), rounds=1)
        assert (stats.processed, stats.probes) == (1, expected)
    with MemoryLessor(table).lease("reminders", SPACE, 3600):  # every sweep denied: no probe
        sweeper = make(flavour, Store([0x0010, 0x8010]), memory, shards=4, probes=4)
        stats = sweeper.run(Context.background().with_timeout(60), rounds=1)
    assert (stats.processed, stats.probes) == (0, 0)


def test_no_probes_with_probes_0_or_a_lessor_that_cannot_observe_its_holders(
    flavour: Flavour,
) -> None:
    table = NotingTable()
    for lessor_, probes in ((flavour.memory(table), 0), (flavour.polling(table), 2)):
        stats = make(flavour, Store([0x0010]), lessor_, shards=2, probes=probes).run(
            Context.background().with_timeout(60), rounds=1
        )
        assert (stats.processed, stats.probes) == (1, 0)


def test_a_lessor_that_observes_only_one_of_the_two_cannot_probe() -> None:
    class Polling(lessor.Lessor):
        """A backend with no _wait_free of its own: the base class's polling default."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = MemoryLessor()

        def _acquire(self, ctx: Context, section_id: str, part: Partition, dur: float) -> Grant:
            return self.inner._acquire(ctx, section_id, part, dur)

        def _release(self, grant: Grant) -> None:
            self.inner._release(grant)

    class WaitsOnly(Polling):
        """Observes give-backs, but cannot tell what is held: no probes either."""

        def _wait_free(self, ctx: Context, section_id: str, part: Partition) -> bool:
            return self.inner.wait_free(ctx, section_id, part)

    class LooksOnly(Polling):
        def _is_held(self, ctx: Context, section_id: str, part: Partition) -> bool:
            return self.inner.is_held(ctx, section_id, part)

    assert sweep_waits.observes(MemoryLessor())
    for cannot in (Polling(), WaitsOnly(), LooksOnly()):
        assert not sweep_waits.observes(cannot), cannot
    stats = make(SyncFlavour(), Store([0x0010]), WaitsOnly(), shards=2, probes=2).run(
        Context.background().with_timeout(60), rounds=1
    )
    assert (stats.processed, stats.probes) == (1, 0)


def test_at_the_bound_a_denied_part_takes_the_place_of_the_oldest_probe() -> None:
    flavour = SyncFlavour()
    table = NotingTable()
    memory, holders = flavour.memory(table), MemoryLessor(table)
    a, b = P(0, 0x8000), P(0x8000, 0x10000)
    with holders.lease("s", P(0x10, 0x20), 3600), holders.lease("s", P(0x9000, 0x9010), 3600):
        waits = Waits(memory, "s", Context.background(), max_waits=1)
        try:
            assert waits.probe(b)
            assert memory.await_registered(1)
            assert not waits.probe(a)  # at the bound
            waits.start(a, 0, P(0x10, 0x20))
            assert waits.watching(a) and not waits.watching(b)
            assert memory.await_registered(2)
            assert not waits.probe(b)  # still at the bound: a denied part is no probe
        finally:
            waits.close()
    assert waits.take_freed() == []
    assert flavour.waits() == []


def test_the_probe_cycle_goes_round_the_shards_and_leaves_out_busy_and_empty_ones() -> None:
    shards = SPACE.split(4)

    class Noting(Waits):
        def __init__(self) -> None:
            self.probed: list[Partition] = []

        def probe(self, shard: Partition) -> bool:
            self.probed.append(shard)
            return shard != shards[3]  # shard 3 is waited on already

    waits = Noting()
    cycle = ProbeCycle(shards, start=1)
    cycle.seen(shards[2], 0)  # found empty
    # 1 is busy, 2 empty, 3 refused: 0 is probed.
    assert cycle.probe(waits, 1, (shards[1],)) == 1
    assert waits.probed == [shards[3], shards[0]]
    cycle.seen(shards[2], 5)  # found work again
    assert cycle.probe(waits, 5, ()) == 3  # each shard once a call: 1, 2 and 0
    assert waits.probed[2:] == [shards[1], shards[2], shards[3], shards[0]]
