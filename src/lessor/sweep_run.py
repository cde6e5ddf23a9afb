"""The run loop of a sweeper (:meth:`Sweeper.run <lessor.sweep.Sweeper.run>`), as operations:
which shard to sweep next, when to wait for a freed range, when to probe, when to pause, and
the totals (:class:`SweepStats`).

:func:`run_steps` decides; it yields a :class:`~lessor.sweep_ops.SweepShard` for each sweep
and a :class:`~lessor.sweep_ops.Pause` after an idle round, and asks the run's waits
(:class:`~lessor.sweep_waits.WaitControl`) to start, drop and hand over waits, none of which
blocks. The synchronous and the asyncio sweepers perform those operations.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, replace

from lessor.context import Context
from lessor.errors import ContextError
from lessor.partition import Partition, SortedPartitions
from lessor.sweep_ops import Pause, Steps, SweepShard
from lessor.sweep_shard import ShardReport
from lessor.sweep_waits import ProbeCycle, WaitControl

__all__ = ["SweepStats", "run_steps", "stopped"]


@dataclass(frozen=True, slots=True)
class SweepStats:
    """Totals over the :class:`ShardReport` objects of a :meth:`Sweeper.run`.

    ``resweeps`` counts the sweeps (among ``shards_swept``) of a shard swept again because a
    part it had been denied, or a holder a probe found in it, came free; ``probes`` counts the
    probes started (see :class:`Sweeper`).
    """

    shards_swept: int = 0
    scanned: int = 0
    processed: int = 0
    skipped: int = 0
    errors: int = 0
    rounds: int = 0
    resweeps: int = 0
    probes: int = 0

    def add(self, report: ShardReport, *, failed: bool | None = None) -> SweepStats:
        """These totals with ``report`` counted in; ``failed`` overrides whether its error
        counts (:meth:`Sweeper.run` does not count its own context ending as one)."""
        if failed is None:
            failed = report.error is not None
        return replace(
            self,
            shards_swept=self.shards_swept + 1,
            scanned=self.scanned + report.scanned,
            processed=self.processed + report.processed,
            skipped=self.skipped + report.skipped,
            errors=self.errors + failed,
        )


def stopped(report: ShardReport, ctx: Context) -> bool:
    """Whether the report's error, if any, is only the caller's context ending."""
    return report.error is None or (isinstance(report.error, ContextError) and ctx.done())


def run_steps(
    ctx: Context,
    rounds: int | None,
    *,
    shards: SortedPartitions,
    rng: random.Random,
    idle_pause: float,
    waits: WaitControl,
    probes: int,
) -> Steps:
    """Sweep every shard of ``shards`` in turn, and each one's follow-ups, until ``ctx`` is
    done or ``rounds`` rounds are over; returns the :class:`SweepStats`.

    A round visits every shard once, starting at one ``rng`` picks and going round in key
    order; follow-up shards a sweep produced are swept before the next shard, and a shard
    whose denied part, or a holder a probe found in it, came free is swept again before
    either. After each sweep that was granted something, up to ``probes`` probes start.
    """
    stats = SweepStats()
    n = len(shards)
    start = rng.randrange(n)
    cycle = ProbeCycle(shards, start + 1)
    while not ctx.done() and (rounds is None or stats.rounds < rounds):
        processed_before = stats.processed
        for i in range(n):
            visit = shards[(start + i) % n]
            waits.drop_inside(visit)  # this visit sweeps it and its parts afresh
            # (shard, level, what the wait that woke it was on: None for no wake-up)
            pending: deque[tuple[Partition, int, Partition | None]] = deque([(visit, 0, None)])
            while not ctx.done():
                for w in waits.take_freed():  # first: as soon as possible
                    pending.appendleft((w.shard, w.level, w.part))
                if not pending:
                    break
                shard, level, woke = pending.popleft()
                report: ShardReport = yield SweepShard(shard, level)
                stats = stats.add(report, failed=not stopped(report, ctx))
                if woke is not None:
                    stats = replace(stats, resweeps=stats.resweeps + 1)
                pending.extend((p, level + 1, None) for p in report.follow_ups)
                if level == 0:
                    cycle.seen(shard, report.scanned)
                denied = report.denied
                if denied is not None and (report.processed or denied != woke):
                    waits.start(shard, level, denied)
                if report.leased and probes:
                    started = cycle.probe(waits, probes, (visit, shard))
                    stats = replace(stats, probes=stats.probes + started)
            if ctx.done():
                return stats  # an interrupted round is not counted
        stats = replace(stats, rounds=stats.rounds + 1)
        last = rounds is not None and stats.rounds >= rounds
        if not last and stats.processed == processed_before and idle_pause > 0:
            yield Pause(idle_pause)
    return stats
