"""The record loops of the tests' lease workers: threads or asyncio tasks lease random ranges and
write down every attempt, for the history checker (:mod:`lessor.testing.history`).

Run by ``tests/etcd/lessor_child.py contend`` (one section, every error a failure), by
``tests/safety/worker.py`` (several sections while faults are injected: a
:class:`~lessor.LessorError` is expected, recorded, and followed by a short back-off; threads of
an ``EtcdLessor``, or tasks of an ``AsyncEtcdLessor``) and by ``tests/etcd/test_aio_history.py``
(tasks in the test's own event loop).

Every attempt becomes one JSON line, flushed at once (the test may SIGKILL the process):
``worker``, ``thread`` (the thread's or task's number), ``section``, ``asked`` and ``answered``
(:func:`time.monotonic`, one clock for every process of the machine), and either a grant —
``ranges``, ``start`` (callback entry), ``end`` (the earlier of callback exit and the lease
deadline) and ``token`` — or an ``error``. :func:`read_records` reads them back and
:func:`holding_of` makes a grant a :class:`~lessor.testing.Holding`.

What a thread and a task do is the same (:class:`Lane`: what to ask for, how long to hold, what
to write); :class:`RecordLoop` runs lanes on threads, :class:`AsyncRecordLoop` as tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from lessor import Context, ContextError, Lessor, Partition, SortedPartitions, fencing_token
from lessor.aio import AsyncLessor
from lessor.aio.wait import wait
from lessor.testing import Holding

__all__ = ["AsyncRecordLoop", "Lane", "RecordLoop", "Workload", "holding_of", "read_records"]


@dataclass(frozen=True)
class Workload:
    """What each lane of worker ``worker`` does for ``seconds`` (or until the run is stopped):
    lease a random range of ``[0, universe]`` in a random one of ``sections`` for ``dur``
    seconds and hold it a random time up to ``hold``, writing every attempt to ``out``.
    ``acquire_within`` bounds each acquisition; ``expected`` errors are recorded and backed off
    from; any other is recorded too, and the run returns its traceback."""

    out: Path
    worker: int
    seconds: float
    seed: object
    sections: Sequence[str]
    universe: int
    dur: float
    hold: float
    acquire_within: float | None = None
    expected: tuple[type[Exception], ...] = ()
    backoff: tuple[float, float] = (0.01, 0.05)


class _Journal:
    """The record file of one run: one line a record, flushed at once, from any thread."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record)
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()  # the test may SIGKILL us: keep what happened


class Lane:
    """One thread's or task's attempts, one after another, until the run ends: what each asks
    for and how long it holds (random, from its own seed), and what is written of it."""

    def __init__(
        self,
        workload: Workload,
        number: int,
        journal: _Journal,
        failures: list[str],
        end: float,
        stop: threading.Event,
    ) -> None:
        self.attempts = 0
        self._w = workload
        self._number = number
        self._journal = journal
        self._failures = failures
        self._end = end
        self._stop = stop
        self.rng = random.Random(f"{workload.seed}-{workload.worker}-{number}")

    def next(self) -> tuple[Context, str, Partition, dict[str, Any]] | None:
        """The next attempt (its context, section, range, and the start of its record), or
        None when the run is over."""
        if self._stop.is_set() or time.monotonic() >= self._end:
            return None
        self.attempts += 1
        w = self._w
        section = self.rng.choice(w.sections)
        a, b = sorted(self.rng.sample(range(w.universe + 1), 2))
        base = {"worker": w.worker, "thread": self._number, "section": section,
                "asked": time.monotonic()}  # fmt: skip
        ctx = Context.background()
        if w.acquire_within is not None:
            ctx = ctx.with_timeout(w.acquire_within)
        return ctx, section, Partition(a, b), base

    def holding(self) -> float:
        """How long to hold the next grant."""
        return self.rng.uniform(0, self._w.hold)

    @staticmethod
    def held(ctx: Context, parts: SortedPartitions, start: float) -> dict[str, Any]:
        """What is written of a grant held from ``start`` until now, under lease ``ctx``."""
        deadline = ctx.deadline
        assert deadline is not None
        return {
            "ranges": parts.to_strings(),
            "start": start,
            "end": min(time.monotonic(), deadline),
            "token": fencing_token(ctx),
        }

    def granted(self, base: dict[str, Any], held: dict[str, Any]) -> None:
        self._journal.write(base | held | {"answered": time.monotonic()})

    def failed(self, base: dict[str, Any], error: Exception) -> float:
        """Write down a failed attempt; the pause before the next one. An unexpected error is
        kept for the run's outcome, and the lane goes on."""
        self._journal.write(base | {"error": f"{type(error).__name__}: {error}",
                                    "answered": time.monotonic()})  # fmt: skip
        if isinstance(error, self._w.expected):
            return self.rng.uniform(*self._w.backoff)
        self._failures.append(
            f"worker {self._w.worker} lane {self._number}:\n"
            + "".join(traceback.format_exception(error))
        )
        return 0.0


@contextlib.contextmanager
def _lanes(
    workload: Workload, count: int, stop: threading.Event | None
) -> Iterator[tuple[list[Lane], list[str]]]:
    """``count`` lanes of a run of ``workload`` that ends after its seconds or when ``stop``
    is set, writing to its file while the block runs; and the run's unexpected errors."""
    failures: list[str] = []
    end = time.monotonic() + workload.seconds
    with workload.out.open("w", encoding="utf-8") as out:
        journal = _Journal(out)
        stop = stop or threading.Event()
        yield [Lane(workload, n, journal, failures, end, stop) for n in range(count)], failures


@dataclass(frozen=True)
class RecordLoop:
    """``threads`` threads of ``workload``, leasing through ``lessor``."""

    lessor: Lessor
    workload: Workload
    threads: int

    def run(self, stop: threading.Event | None = None) -> tuple[int, list[str]]:
        """Run the threads to their end (the workload's seconds, or ``stop`` set); how many
        attempts were made, and the tracebacks of the unexpected errors."""
        with _lanes(self.workload, self.threads, stop) as (lanes, failures):
            running = [threading.Thread(target=self._lane, args=(lane,)) for lane in lanes]
            for t in running:
                t.start()
            for t in running:
                t.join()
        return sum(lane.attempts for lane in lanes), failures

    def _lane(self, lane: Lane) -> None:
        def work(ctx: Context, parts: SortedPartitions) -> dict[str, Any]:
            start = time.monotonic()
            ctx.wait(lane.holding())  # the work; a SIGSTOP may land here
            return lane.held(ctx, parts, start)

        while (attempt := lane.next()) is not None:
            ctx, section, part, base = attempt
            try:
                held = self.lessor.with_lease(ctx, section, part, self.workload.dur, work)
            except Exception as e:
                Context.background().wait(lane.failed(base, e))
                continue
            lane.granted(base, held)


@dataclass(frozen=True)
class AsyncRecordLoop:
    """``tasks`` asyncio tasks of ``workload``, leasing through ``lessor``.

    A task's grant is written even when the lease's deadline cancels its hold (the ``async
    with`` then raises :class:`~lessor.DeadlineExceeded`, an expected end, not a failure)."""

    lessor: AsyncLessor
    workload: Workload
    tasks: int

    async def run(self, stop: threading.Event | None = None) -> tuple[int, list[str]]:
        """As :meth:`RecordLoop.run`, on the running event loop."""
        with _lanes(self.workload, self.tasks, stop) as (lanes, failures):
            await asyncio.gather(*(self._lane(lane) for lane in lanes))
        return sum(lane.attempts for lane in lanes), failures

    async def _lane(self, lane: Lane) -> None:
        while (attempt := lane.next()) is not None:
            ctx, section, part, base = attempt
            held: list[dict[str, Any]] = []  # the grant's record, once its hold has ended
            try:
                async with self.lessor.lease(section, part, self.workload.dur, ctx=ctx) as lease:
                    start = time.monotonic()
                    try:
                        await wait(lease.ctx, lane.holding())  # the work
                    finally:
                        held.append(lane.held(lease.ctx, lease.partitions, start))
            except Exception as e:
                if held and isinstance(e, ContextError):
                    pass  # the deadline (or the ctx) interrupted the hold: a grant all the same
                elif held:
                    raise  # after a grant, nothing else may come out: the run fails
                else:
                    await wait(Context.background(), lane.failed(base, e))
                    continue
            lane.granted(base, held[0])


def read_records(path: Path) -> list[dict[str, Any]]:
    """A record file's lines; a last line cut short by a killed worker is dropped (its status
    and stderr tell why)."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def holding_of(record: dict[str, Any], holder: str | None = None) -> Holding:
    """A grant's record as a :class:`~lessor.testing.Holding`, of ``holder`` (by default
    ``w<worker>.t<thread>``)."""
    return Holding(
        holder if holder is not None else f"w{record['worker']}.t{record['thread']}",
        record["section"],
        tuple(Partition.from_string(p) for p in record["ranges"]),
        record["start"],
        record["end"],
        record["token"],
    )
