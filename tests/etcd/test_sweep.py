"""Sweepers in several processes share one store through a real etcd; some are SIGKILLed
mid-batch, holding their leases.

The store is a SQLite file of rows; each child (``sweep_child.py``) sweeps it with a
:class:`lessor.sweep.Sweeper` and logs every processing of a row as ``(item, holder, token,
start, end)`` in the same transaction that marks the row done. From that log the test proves
the issue's promise: every row was processed at least once, and no two holders processed one
row at overlapping times (``lessor.testing.history``), whatever the killed children were doing.

Then, in one process, a sweeper whose shard was denied is shown to sweep it again as soon as
etcd frees it (the etcd lessor's ``wait_free``), long before its round's pause would end; and a
sweeper that was never denied a killed process's range, busy in another shard, takes it over
as soon as etcd expires that process's lease, because a probe saw it (``lessor.sweep_waits``);
and that a probe through a slow link to etcd still ends after one look when nothing is held, or
queues the shard once the holder it follows gives back.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import lessor.aio
import lessor.etcd
from lessor import Context, Partition, Sweeper, SweepStats, sweep_waits
from lessor.etcd import AsyncEtcdLessor, EtcdLessor
from lessor.sweep_waits import Waits, Woken
from lessor.testing import FaultProxy, Holding, find_overlaps, find_token_inversions
from lessor.testing.child import Child
from tests.support.programs import ready_set_go
from tests.support.sweep import AsyncCountsCalls, Calls, CountsCalls, FirstShardFirst

from .conftest import Spawn
from .test_wait_free import Watches

ROWS = 600
WORKERS = 4
KILLED = 2
KEY_SPACE_BYTES = 4
LEASE_SECONDS = 2.0  # the etcd lease is ceil(2 + 0.2) = 3 s, renewed while its process lives
WORK = 0.01  # seconds of work per row: a batch of 8 takes 80 ms, time to be killed in
SWEEP_CHILD = Path(__file__).with_name("sweep_child.py")


def _make_store(path: Path, rng: random.Random) -> list[int]:
    ids = sorted(rng.sample(range(1 << (8 * KEY_SPACE_BYTES)), ROWS))
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
        db.execute(
            "CREATE TABLE rows (id INTEGER PRIMARY KEY, done INTEGER NOT NULL DEFAULT 0,"
            " fence INTEGER NOT NULL DEFAULT 0)"
        )
        db.execute(
            "CREATE TABLE log (item INTEGER NOT NULL, holder TEXT NOT NULL,"
            " token INTEGER NOT NULL, start REAL NOT NULL, end REAL NOT NULL)"
        )
        db.executemany("INSERT INTO rows (id) VALUES (?)", [(i,) for i in ids])
    return ids


def _await_line(child: Child, prefix: str, deadline: float) -> str:
    while True:
        line = child.expect(timeout=max(0.1, deadline - time.monotonic()))
        if line.startswith(prefix):
            return line


def test_killed_sweepers_lose_nothing_and_nobody_overlaps(
    etcd_server: Any, spawn: Spawn, tmp_path: Path
) -> None:
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    db_path = tmp_path / "rows.db"
    ids = _make_store(db_path, rng)
    config = {
        "endpoints": etcd_server.endpoints,
        "prefix": f"/sweep-{uuid.uuid4().hex[:8]}/",
        "section": "reminders",
        "db": str(db_path),
        "key_space_bytes": KEY_SPACE_BYTES,
        "shards": 8,
        "lease_seconds": LEASE_SECONDS,
        "batch_size": 8,
        "split_threshold": 40,  # ~75 rows a shard: crowded shards are split
        "work": WORK,
    }
    children = [
        spawn(f"sweeper {i}", "sweep", {**config, "name": f"w{i}"}, program=SWEEP_CHILD)
        for i in range(WORKERS)
    ]
    t0 = ready_set_go(children)

    # Kill the victims each in the middle of a batch (a later one for the second), so each
    # dies holding a lease with rows of that batch not done.
    victims, survivors = children[:KILLED], children[KILLED:]
    cut: dict[str, tuple[int, list[int], float]] = {}
    for n, victim in enumerate(victims):
        for _ in range(1 + 2 * n):
            line = _await_line(victim, "working ", t0 + 20)
        _, token_text, batch_text = line.split()
        victim.kill()
        batch_ids = [int(i) for i in batch_text.split(",")]
        cut[victim.name] = (int(token_text), batch_ids, time.monotonic())

    # A round that scans nothing means no row is left undone.
    for survivor in survivors:
        _await_line(survivor, "round scanned=0 ", t0 + 25)
    for survivor in survivors:
        survivor.send("stop")
    for survivor in survivors:
        summary = _await_line(survivor, "errors ", time.monotonic() + 10)
        assert survivor.wait(timeout=10) == 0, survivor.log_text()
        assert summary.startswith("errors 0 "), f"{survivor.name}: {survivor.log_text()}"
    elapsed = time.monotonic() - t0

    with sqlite3.connect(db_path) as db:
        done = dict(db.execute("SELECT id, done FROM rows").fetchall())
        log = db.execute("SELECT item, holder, token, start, end FROM log").fetchall()

    context = f"(seed {seed}, {elapsed:.1f}s, {len(log)} processings)"
    assert sorted(done) == ids
    not_done = [i for i, d in done.items() if d == 0]
    assert not_done == [], f"rows never processed {context}: {not_done[:10]}"
    assert {item for item, *_ in log} == set(ids), context

    # No two holders processed one row at overlapping times; tokens order its holders.
    holdings = [
        Holding(holder, f"row {item}", (Partition(item, item + 1),), start, end, token)
        for item, holder, token, start, end in log
    ]
    assert find_overlaps(holdings) == [], context
    assert find_token_inversions(holdings) == [], context

    # The kills mattered: the victims died with rows of their batches undone, which other
    # holders processed after the kill, under newer tokens.
    orphans = 0
    for n, victim in enumerate(victims):
        token, batch, killed = cut[victim.name]
        mine = {h.ranges[0].low for h in holdings if h.holder == f"w{n}"}
        for h in holdings:
            if h.ranges[0].low in batch and h.ranges[0].low not in mine:
                assert h.holder != f"w{n}"
                assert h.start >= killed, context
                assert h.token > token, context
                orphans += 1
    assert orphans > 0, f"the victims finished their batches before they were killed {context}"
    assert elapsed < 30, context


# -- in one process: a denied shard is swept again as soon as etcd frees it ----------------------

IDLE = 3600.0  # the pause after a round that processed nothing: what a re-sweep must beat


class _Keys:
    """Rows as a set of keys; ``process`` deletes them and sets an event per key."""

    def __init__(self, keys: list[int]) -> None:
        self._lock = threading.Lock()
        self.keys = set(keys)
        self.events = {k: threading.Event() for k in keys}
        self.at: dict[int, float] = {}

    def scan(self, ctx: Context, part: Partition) -> list[int]:
        with self._lock:
            return sorted(k for k in self.keys if k in part)

    def process(self, ctx: Context, batch: Sequence[int]) -> None:
        now = time.monotonic()
        with self._lock:
            self.keys.difference_update(batch)
        for k in batch:
            self.at[k] = now
            self.events[k].set()


class _Counting(CountsCalls, EtcdLessor):
    """An EtcdLessor that counts the calls of wait_free and is_held."""

    def __init__(self, endpoints: list[str], prefix: str) -> None:
        super().__init__(endpoints, prefix=prefix)


def _run_in_thread(sweeper: Sweeper[int], ctx: Context) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(sweeper.run(ctx))
        except BaseException as e:  # surfaced by the test
            out.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def _stats(thread: threading.Thread, out: list[Any]) -> SweepStats:
    thread.join(60)
    assert not thread.is_alive(), "run did not end with its context"
    (result,) = out
    if isinstance(result, BaseException):
        raise result
    assert isinstance(result, SweepStats)
    return result


def test_a_partly_granted_shard_is_swept_again_when_etcd_sees_its_holder_give_back(
    etcd_server: Any,
) -> None:
    keys = [0x8010, 0x8020, 0x8030]  # all in the second of two shards
    rows = _Keys(keys)
    prefix = f"/sweep-{uuid.uuid4().hex[:8]}/"
    other = EtcdLessor(etcd_server.endpoints, prefix=prefix)
    sweeping = _Counting(etcd_server.endpoints, prefix)
    with other, sweeping:
        sweeper = Sweeper(
            sweeping,
            "reminders",
            Partition.universe(2),
            shards=2,
            scan=rows.scan,
            process=rows.process,
            idle_pause=IDLE,
            rng=FirstShardFirst(),
        )
        holder = other.lease("reminders", Partition(0x8020, 0x8021), 60)
        holder.__enter__()
        ctx = Context.background()
        thread, out = _run_in_thread(sweeper, ctx)
        try:
            # Rounds 1 and 2 were denied 0x8020; the second wait began after round 2's sweep
            # of the shard, and then run pauses for IDLE seconds unless a wait returns.
            assert sweeping.await_calls(2)
            assert rows.events[0x8010].is_set() and not rows.events[0x8020].is_set()
            released = time.monotonic()
            holder.__exit__(None, None, None)
            assert rows.events[0x8020].wait(60), "the shard waited for its next round"
        finally:
            ctx.cancel()
            stats = _stats(thread, out)
    assert rows.at[0x8020] - released < IDLE / 60
    assert stats.resweeps == 1
    assert rows.keys == set()


def test_an_aio_sweeper_sweeps_a_partly_granted_shard_again_when_etcd_sees_its_holder_leave(
    etcd_server: Any,
) -> None:
    # The case above for lessor.aio.Sweeper over the asyncio etcd lessor, the holder a sync
    # EtcdLessor in another thread; and run's end leaves no task of its waits behind.
    keys = [0x8010, 0x8020, 0x8030]  # all in the second of two shards
    rows = _Keys(keys)
    prefix = f"/sweep-{uuid.uuid4().hex[:8]}/"

    class Counting(AsyncCountsCalls, AsyncEtcdLessor):
        def __init__(self) -> None:
            super().__init__(etcd_server.endpoints, prefix=prefix)
            self.counted = Calls()

    async def scan(ctx: Context, part: Partition) -> list[int]:
        await asyncio.sleep(0)  # as a real one would: round 1's wait task starts meanwhile
        return rows.scan(ctx, part)

    async def process(ctx: Context, batch: Sequence[int]) -> None:
        rows.process(ctx, batch)

    async def main(other: EtcdLessor) -> tuple[float, SweepStats]:
        async with Counting() as sweeping:
            sweeper = lessor.aio.Sweeper(sweeping, "reminders", Partition.universe(2), shards=2,
                                         scan=scan, process=process, idle_pause=IDLE,
                                         rng=FirstShardFirst())  # fmt: skip
            holder = other.lease("reminders", Partition(0x8020, 0x8021), 60)
            holder.__enter__()
            ctx = Context.background()
            run = asyncio.create_task(sweeper.run(ctx))
            try:
                # Rounds 1 and 2 were denied 0x8020: then run pauses for IDLE seconds.
                while sweeping.calls < 2:
                    await asyncio.sleep(0.01)
                assert rows.events[0x8010].is_set() and not rows.events[0x8020].is_set()
                released = time.monotonic()
                await asyncio.to_thread(holder.__exit__, None, None, None)
                while not rows.events[0x8020].is_set():
                    await asyncio.sleep(0.01)
            finally:
                holder.__exit__(None, None, None)
                ctx.cancel()
                stats = await asyncio.wait_for(run, 60)
            left = asyncio.all_tasks() - {asyncio.current_task()}
            assert not [t for t in left if t.get_name().startswith("lessor-sweep-")]
        return released, stats

    with EtcdLessor(etcd_server.endpoints, prefix=prefix) as other:
        released, stats = asyncio.run(asyncio.wait_for(main(other), 120))
    assert rows.at[0x8020] - released < IDLE / 60
    assert stats.resweeps == 1
    assert rows.keys == set()


def test_a_denied_shard_is_swept_again_when_etcd_ends_an_overrunning_holders_lease(
    etcd_server: Any,
) -> None:
    keys = [0x8010, 0x8020]
    rows = _Keys(keys)
    prefix = f"/sweep-{uuid.uuid4().hex[:8]}/"
    other = EtcdLessor(etcd_server.endpoints, prefix=prefix)
    sweeping = EtcdLessor(etcd_server.endpoints, prefix=prefix)
    with other, sweeping:
        sweeper = Sweeper(
            sweeping,
            "reminders",
            Partition.universe(2),
            shards=2,
            scan=rows.scan,
            process=rows.process,
            idle_pause=IDLE,
        )
        ctx = Context.background()
        # Its holder never gives it back in time: the lessor ends it at its deadline.
        with other.lease("reminders", Partition(0x8000, 0xC000), 1.0) as dead:
            thread, out = _run_in_thread(sweeper, ctx)
            try:
                assert rows.events[0x8020].wait(60), "the shard waited for its next round"
            finally:
                ctx.cancel()
                _stats(thread, out)
            assert min(rows.at.values()) >= dead.deadline
    assert rows.keys == set()


# -- in one process: a probe follows a killed process's lease until etcd expires it -------------

HOLDER_DUR = 2.0
TTL = math.ceil(HOLDER_DUR + 0.2)  # the killed holder's etcd lease: 3 s, renewed by nothing
A_KEYS = [0x0010, 0x0020, 0x0030, 0x0040]  # the sweeper's own shard, one item a sweep
B_KEYS = [0x9000, 0x9001]  # the other shard, which only the killed process ever held


class _Stepped:
    """Processes the first shard's items one step from the test at a time (the sweeper stays
    in that shard meanwhile); notes when each item was processed."""

    def __init__(self, rows: _Keys) -> None:
        self.rows = rows
        self.steps = threading.Semaphore(0)
        self.waiting = threading.Semaphore(0)
        self.free = False

    def __call__(self, ctx: Context, batch: Sequence[int]) -> None:
        if batch[0] < 0x8000 and not self.free:
            self.waiting.release()
            assert self.steps.acquire(timeout=60)
        self.rows.process(ctx, batch)

    def step(self) -> None:
        assert self.waiting.acquire(timeout=60), "the sweeper did not come to its next item"
        self.steps.release()

    def run_free(self) -> None:
        self.free = True
        self.steps.release(100)


def _probe_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("lessor-sweep-probe")]


def test_a_probe_takes_over_the_shard_of_a_killed_process_nobody_was_denied(
    etcd_server: Any, spawn: Spawn
) -> None:
    rows = _Keys(A_KEYS + B_KEYS)
    prefix = f"/sweep-{uuid.uuid4().hex[:8]}/"
    holder = spawn("holder", "crash", {"endpoints": etcd_server.endpoints, "prefix": prefix,
                                       "section": "reminders", "range": "9000_9002",
                                       "dur": HOLDER_DUR})  # fmt: skip
    assert holder.expect(timeout=30) == "ready"
    holder.send("go")
    held = json.loads(holder.expect(timeout=30))
    assert held["ranges"] == ["9000_9002"], held
    sweeping = _Counting(etcd_server.endpoints, prefix)
    stepped = _Stepped(rows)
    with sweeping:
        sweeper = Sweeper(sweeping, "reminders", Partition.universe(2), shards=2,
                          scan=rows.scan, process=stepped, lease_seconds=60, batch_size=1,
                          split_threshold=1, secondary_shards=2, probes=1, idle_pause=IDLE,
                          rng=FirstShardFirst())  # fmt: skip
        ctx = Context.background()
        thread, out = _run_in_thread(sweeper, ctx)
        try:
            stepped.step()  # 0x0010; after it the sweeper probes the other shard...
            assert sweeping.await_calls(1)  # ...which the holder holds: the probe follows it
            stepped.step()  # 0x0020: the sweeper is on its next item, and stays there
            killed = time.monotonic()
            holder.kill()
            (probe,) = _probe_threads()
            probe.join(TTL + 10)
            ended = time.monotonic()
            assert not probe.is_alive(), "the probe did not see the killed holder's lease end"
            assert not rows.events[0x9000].is_set()  # nobody swept it: it was queued
            stepped.run_free()
            assert rows.events[0x9000].wait(30)
        finally:
            ctx.cancel()
            stepped.run_free()
            stats = _stats(thread, out)
    # etcd ends the holder's lease TTL seconds after its grant, within its 0.5 s expiry check;
    # the probe looks again GRACE seconds later and finds nothing held.
    print(f"\nprobe: the killed holder's shard queued {ended - killed:.2f}s after the kill "
          f"(TTL {TTL}s), swept {rows.at[0x9000] - killed:.2f}s after it")  # fmt: skip
    assert ended - killed < TTL + 0.5 + sweep_waits.GRACE + 0.5, f"{ended - killed:.2f}s"
    assert rows.at[0x9000] > killed
    assert stats.resweeps >= 1 and stats.probes >= 1


def test_a_probe_of_a_shard_nobody_holds_costs_one_read(etcd_server: Any) -> None:
    rows = _Keys([0x0010])
    sweeping = _Counting(etcd_server.endpoints, f"/sweep-{uuid.uuid4().hex[:8]}/")
    with sweeping:
        sweeper = Sweeper(sweeping, "reminders", Partition.universe(2), shards=2,
                          scan=rows.scan, process=rows.process, probes=1, idle_pause=0,
                          rng=FirstShardFirst())  # fmt: skip
        stats = sweeper.run(Context.background().with_timeout(60), rounds=1)
    # one look (a read) found nothing held: the probe ends, sweeping nothing again
    assert (stats.processed, stats.probes, stats.resweeps) == (1, 1, 0)
    assert (sweeping.looks, sweeping.calls) == (1, 0)
    assert _probe_threads() == []


# -- a probe through a slow link to etcd -----------------------------------------------------------

SLOW = 0.15  # seconds each way: every read takes over 0.3 s, as across datacenters


def _join_probes(shard: Partition, timeout: float) -> None:
    for thread in _probe_threads():
        thread.join(timeout)
        assert not thread.is_alive(), f"the probe of {shard} still runs after {timeout}s"


def test_a_probe_through_a_slow_link_ends_after_one_look_when_nothing_is_held(
    etcd_server: Any,
) -> None:
    # Regression: a probe used to take a wait_free answered later than 0.2 s for "a holder
    # gave back", and looked again forever when etcd was that far away.
    prefix = f"/sweep-{uuid.uuid4().hex[:8]}/"
    with (
        FaultProxy(etcd_server.endpoint, delay=SLOW) as link,
        _Counting([link.address], prefix) as far,
    ):
        waits = Waits(far, "reminders", Context.background(), max_waits=1)
        try:
            shard = Partition(0, 0x8000)
            started = time.monotonic()
            assert waits.probe(shard)
            _join_probes(shard, 10)
            took = time.monotonic() - started
            assert waits.take_freed() == []  # nothing held: nothing to sweep
            assert (far.looks, far.calls) == (1, 0)
            assert waits.probe(Partition(0x8000, 0x10000))  # its slot was given back
        finally:
            waits.close()
    assert took >= 2 * SLOW  # the look did go through the slow link
    print(f"\nprobe of a shard nobody holds, through a {SLOW * 1e3:.0f} ms link: {took:.2f}s")


def test_a_probe_through_a_slow_link_follows_a_holder_and_queues_its_shard_when_it_leaves(
    etcd_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"/sweep-{uuid.uuid4().hex[:8]}/"
    watches = Watches(monkeypatch)
    with (
        EtcdLessor(etcd_server.endpoints, prefix=prefix) as near,
        FaultProxy(etcd_server.endpoint, delay=SLOW) as link,
        _Counting([link.address], prefix) as far,
    ):
        shard = Partition(0, 0x8000)
        holder = near.lease("reminders", Partition(0x10, 0x20), 60)
        holder.__enter__()
        waits = Waits(far, "reminders", Context.background(), max_waits=1)
        try:
            assert waits.probe(shard)
            watches.next(timeout=10)  # a slow look found the holder: the probe watches it
            assert waits.take_freed() == []
            holder.__exit__(None, None, None)
            given_back = time.monotonic()
            _join_probes(shard, 10)
            queued = time.monotonic()
            assert waits.take_freed() == [Woken(shard, 0, shard)]  # the shard is to be swept
            assert (far.looks, far.calls) == (2, 1)
        finally:
            holder.__exit__(None, None, None)
            waits.close()
    print(f"\nprobe through a {SLOW * 1e3:.0f} ms link: shard queued "
          f"{queued - given_back:.2f}s after the give-back")  # fmt: skip
