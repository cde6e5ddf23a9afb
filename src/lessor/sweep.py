"""A distributed sweep: scan a shard of a key space, lease what was found, process only that.

This is the loop LUCI's transactional task queue runs over its reminders
(``server/tq/internal/sweep``), built on any :class:`~lessor.contract.Lessor`. Many
:class:`Sweeper` objects, in many processes and datacenters, sweep the same key space and
cooperate only through the lessor: nothing else is shared.

One sweep of a shard (:meth:`Sweeper.sweep_shard`):

1. ``scan(ctx, shard)`` returns the items found in the shard, sorted by key (``key(item)``, a
   non-negative int inside the shard).
2. If it returned more than ``split_threshold`` items and the shard is less than two levels
   deep, only the first ``split_threshold`` are kept; the rest of the shard, after the last
   kept key, is split with :meth:`~lessor.partition.Partition.educated_split_after` into at
   most ``secondary_shards`` follow-up shards one level deeper (``ShardReport.follow_ups``;
   :meth:`Sweeper.run` sweeps them next). At the deepest level nothing is split and every item
   found is kept, as LUCI refuses to recurse past two levels.
3. The span from the first to the last kept key is leased in section ``section_id`` for
   ``lease_seconds``. The lessor grants the sub-ranges no other live lease holds.
4. The kept items whose key lies in a granted range are handed to ``process(lease_ctx,
   batch)`` in key order, in batches of at most ``batch_size``. Before each batch the lease's
   context is checked: once its deadline has passed (or it is cancelled) no further batch is
   handed over.
5. The lease is given back.

The guarantee: an item is handed to ``process`` only while its key is inside a range this
sweeper holds, and with the lease's context, whose deadline falls before the lease expires.
So, within one section, two sweepers never hand the same item to ``process`` at overlapping
times, as long as ``process`` stops when its context is done (it should check
``ctx.done()`` or pass ``ctx.remaining()`` on as a timeout). A ``process`` that overruns its
deadline can still be overtaken by the next holder: stores that must not take a late write
should fence writes with the lease's fencing token, :func:`lessor.fencing_token` of the
context ``process`` receives (also ``ShardReport.token``); tokens of holders of a key
strictly increase.

Items that are not processed — held by another sweeper, found after the deadline passed, or in
a batch whose ``process`` raised — are left where they are, for a later sweep to find again.
Those held by another sweeper are not left for long: :meth:`Sweeper.run` waits, in the
background, for the part of the shard it was denied to come free
(:meth:`~lessor.contract.Lessor.wait_free`) and sweeps the shard again as soon as it does,
between two other sweeps, rather than a round later. Nor is the work of a sweeper that died
holding its lease, although nobody was denied it: ``run`` also looks at other shards for
holders as it works (*probes*), follows those it finds, and sweeps their shard once they are
all gone, whether they gave back or their lease ran out (see :class:`Sweeper` and
:mod:`lessor.sweep_waits`).
Processing is therefore at least once, never concurrent. The scan runs before the lease is
taken, so an item it found may have been processed by the previous holder of its key in the
meantime: ``process`` must be idempotent (or re-check each item under the lease) and, in the
reminders use case, delete what it has done so that a later scan does not find it.

Errors from ``scan``, from ``process`` and from the lessor (``lessor.Unavailable``,
``lessor.DeadlineExceeded`` of the lease, ...) are recorded in the shard's
:class:`ShardReport` and passed to ``on_error`` (by default, logged); they never end
:meth:`Sweeper.run`. A failing batch does not stop the rest of its shard: later batches are
still handed over while the lease lasts, so one poisoned item cannot starve its neighbours.
Only the caller's context ending (its deadline, or :meth:`~lessor.context.Context.cancel`)
ends :meth:`Sweeper.run`.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Generic, TypeVar, cast

from lessor import checks
from lessor.context import Context
from lessor.contract import Lessor
from lessor.errors import ContextError
from lessor.partition import Partition, SortedPartitions
from lessor.registry import get, registered
from lessor.sweep_shard import MAX_LEVEL, ShardReport, ShardSweep
from lessor.sweep_waits import ProbeCycle, Waits, observes

__all__ = ["MAX_LEVEL", "Key", "ShardReport", "SweepStats", "Sweeper"]

log = logging.getLogger("lessor.sweep")

Key = int
"""Keys are non-negative ints in the key space; a hex id ``"0a3f"`` is ``int("0a3f", 16)``."""

T = TypeVar("T")


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


def _int_key(item: object) -> int:
    return cast(int, item)


def _log_error(report: ShardReport, err: BaseException) -> None:
    log.error(
        "sweep of shard %s (level %d) failed after %d of %d items: %s",
        report.shard,
        report.level,
        report.processed,
        report.scanned,
        err,
        exc_info=err,
    )


def _check_where(lessor: object, section_id: object, key_space: object) -> None:
    """The checks of what a :class:`Sweeper` sweeps: lessor, section and key space."""
    if isinstance(lessor, str):
        if lessor not in registered():
            known = ", ".join(repr(i) for i in registered()) or "none"
            raise ValueError(f"lessor {lessor!r} is not registered (registered: {known})")
    elif not isinstance(lessor, Lessor):  # abstract: checks.instance cannot take it
        raise checks.wrong_type(lessor, "lessor", "a lessor.Lessor or a registered id")
    checks.section_id(section_id)
    checks.partition(key_space, "key_space", empty=False)


class Sweeper(Generic[T]):
    """Sweeps a key space cut into ``shards`` shards; see the module documentation.

    ``lessor`` is a :class:`~lessor.contract.Lessor` or the id of a registered one (resolved
    with :func:`lessor.get` and the context of the first sweep). ``rng`` picks the first shard
    of :meth:`run` (so sweepers that start together spread over the key space).
    ``idle_pause`` is how long :meth:`run` waits after a round that processed nothing, so an
    empty key space is not scanned in a busy loop. ``max_waits`` and ``probes`` bound what
    :meth:`run` waits for in the background (below).

    **A denied shard is swept again as soon as it comes free.** When a sweep in :meth:`run` is
    denied some of the items it found (another lease holds them: a sweeper at work, or a dead
    one whose lease has not yet expired), ``run`` calls
    :meth:`~lessor.contract.Lessor.wait_free` on the span of those items in a background
    thread, once the sweep's own lease was given back, and goes on with its round. When that
    returns True, the shard is swept again (a fresh scan under a fresh lease) before the next
    sweep of the round, or at once when ``run`` is in its idle pause, which it cuts short.

    **Probes find the work of a sweeper nobody was denied.** A sweeper that dies holding a
    lease deep in a shard nobody else visits leaves work that no wait above covers: without
    more, it would wait for someone's round to reach that shard. So after each sweep that was
    granted something, ``run`` *probes* up to ``probes`` other shards of :attr:`shards` (in
    key order from where the last probe stopped, leaving out the one it is sweeping, those
    its last sweep found empty, and those it waits on already): an
    :meth:`~lessor.contract.Lessor.is_held` of the whole shard in a background thread. Where
    nothing is held the probe is over (one read for etcd, no write). Where other sweepers hold
    ranges, the probe follows them with ``wait_free``, looking again after each give-back (a
    live sweeper takes its next lease there at once), and wakes ``run`` when nobody holds
    anything there any more: the shard is swept
    again, and whatever the holders left (nothing, if they finished it; the work a dead one
    held, when its lease ran out) is taken over. So a dead sweeper's shard is taken over
    within about a sweep of its lease's end, provided a probe saw one of its leases there:
    with ``n`` sweepers at work, each shard is probed about every
    ``len(shards) / (probes * n)`` sweeps (:mod:`lessor.sweep_waits`). Probes are made only
    with a lessor that observes its holders (one that overrides both
    :meth:`~lessor.contract.Lessor._wait_free` and :meth:`~lessor.contract.Lessor._is_held`,
    as the memory and etcd lessors do).

    Sweeps are still made one at a time, by the thread that called ``run``, each under its
    lease: processing stays at least once and never concurrent. The bounds:

    * a sweep made on a wake-up starts a wait again only if it processed something or was
      denied another span than the one it woke from (a holder moved on): so a wake-up that
      freed nothing (early, or another sweeper got there first) is not repeated until the
      shard's next regular visit, and every further wake-up follows progress, ours or
      another holder's, never a busy loop;
    * at most ``max_waits`` waits, probes included, at once: a denied part at the bound takes
      the place of the oldest probe, else it waits for its regular visit in the next round, as
      without waiting (every one, with ``max_waits=0``, which also turns probes off);
    * at most ``probes`` probes per sweep that leased something: an idle sweeper probes
      nothing (its rounds visit every shard anyway);
    * the regular visit of a shard drops the waits on it and on its parts (it sweeps them
      afresh), and every wait ends with ``run`` (``ctx`` done or ``rounds`` reached): a part
      that frees after that is found by the next ``run``.

    With a backend that cannot observe its holders (the polling default of
    :meth:`~lessor.contract.Lessor._wait_free`) a wait returns after a back-off whether or not
    anything came free: idle rounds then come at least that often.
    """

    def __init__(
        self,
        lessor: Lessor | str,
        section_id: str,
        key_space: Partition,
        *,
        shards: int,
        scan: Callable[[Context, Partition], Sequence[T]],
        process: Callable[[Context, Sequence[T]], object],
        key: Callable[[T], int] | None = None,
        lease_seconds: float = 60.0,
        batch_size: int = 100,
        split_threshold: int = 1000,
        secondary_shards: int = 16,
        idle_pause: float = 1.0,
        max_waits: int = 16,
        probes: int = 2,
        rng: random.Random | None = None,
        on_error: Callable[[ShardReport, BaseException], None] | None = None,
    ) -> None:
        _check_where(lessor, section_id, key_space)
        checks.count(shards, "shards")
        checks.function(scan, "scan")
        checks.function(process, "process")
        if key is not None:
            checks.function(key, "key")
        lease_dur = checks.duration(lease_seconds, "lease_seconds")
        checks.count(batch_size, "batch_size")
        checks.count(split_threshold, "split_threshold")
        checks.count(secondary_shards, "secondary_shards")
        pause = checks.duration(idle_pause, "idle_pause", zero=True)
        checks.count(max_waits, "max_waits", zero=True)
        checks.count(probes, "probes", zero=True)
        if rng is not None:
            checks.instance(rng, "rng", random.Random, "a random.Random or None")
        if on_error is not None:
            checks.function(on_error, "on_error")

        self._lessor_id = lessor if isinstance(lessor, str) else None
        self._lessor = lessor if isinstance(lessor, Lessor) else None
        self.section_id = section_id
        self.key_space = key_space
        self.shards: SortedPartitions = key_space.split(shards)
        self._scan = scan
        self._process = process
        self._key: Callable[[T], int] = key if key is not None else _int_key
        self.lease_seconds = lease_dur
        self.batch_size = batch_size
        self.split_threshold = split_threshold
        self.secondary_shards = secondary_shards
        self.idle_pause = pause
        self.max_waits = max_waits
        self.probes = probes
        self._rng = rng if rng is not None else random.Random()
        self._on_error = on_error if on_error is not None else _log_error

    def _resolve(self, ctx: Context) -> Lessor:
        if self._lessor is None:
            assert self._lessor_id is not None
            self._lessor = get(ctx, self._lessor_id)
        return self._lessor

    # -- one shard ---------------------------------------------------------------------------

    def sweep_shard(self, ctx: Context, shard: Partition, *, level: int = 0) -> ShardReport:
        """Scan ``shard``, lease what was found, process what was granted; report.

        ``level`` is the shard's depth (0 for the shards of :attr:`shards`, one more for each
        follow-up split). Errors are reported, not raised: the only exceptions are bad
        arguments and failing to resolve a lessor given by id.
        """
        checks.context(ctx)
        checks.partition(shard, "shard")
        if checks.count(level, "level", zero=True) > MAX_LEVEL:
            raise ValueError(f"level must be in 0..{MAX_LEVEL}, got {level}")
        if shard.is_empty() or not (
            self.key_space.low <= shard.low and shard.high <= self.key_space.high
        ):
            raise ValueError(
                f"shard {shard} must be a non-empty part of the key space {self.key_space}"
            )
        lessor = self._resolve(ctx)
        run = ShardSweep(self, lessor, ctx, shard, level)
        report = run.sweep()
        if report.error is not None and not _stopped(report, ctx):
            # The caller's own context ending is how a sweep is stopped, not a failure.
            self._on_error(report, report.error)
        return report

    # -- the loop ----------------------------------------------------------------------------

    def run(self, ctx: Context, *, rounds: int | None = None) -> SweepStats:
        """Sweep every shard in turn, and each one's follow-ups, until ``ctx`` is done.

        A round visits every shard once, starting at a random one and going round in key
        order; follow-up shards a sweep produced are swept before the next shard, and a shard
        whose denied part, or a holder a probe found in it, came free is swept again before
        either (see :class:`Sweeper`). With ``rounds`` given, returns after that many rounds
        (or earlier, when ``ctx`` is done).
        """
        checks.context(ctx)
        if rounds is not None:
            checks.count(rounds, "rounds")
        lessor = self._resolve(ctx)
        waits = Waits(lessor, self.section_id, ctx, max_waits=self.max_waits)
        try:
            return self._run(ctx, rounds, waits, self.probes if observes(lessor) else 0)
        finally:
            waits.close()

    def _run(self, ctx: Context, rounds: int | None, waits: Waits, probes: int) -> SweepStats:
        stats = SweepStats()
        n = len(self.shards)
        start = self._rng.randrange(n)
        cycle = ProbeCycle(self.shards, start + 1)
        while not ctx.done() and (rounds is None or stats.rounds < rounds):
            processed_before = stats.processed
            for i in range(n):
                visit = self.shards[(start + i) % n]
                waits.drop_inside(visit)  # this visit sweeps it and its parts afresh
                # (shard, level, what the wait that woke it was on: None for no wake-up)
                pending: deque[tuple[Partition, int, Partition | None]] = deque([(visit, 0, None)])
                while not ctx.done():
                    for w in waits.take_freed():  # first: as soon as possible
                        pending.appendleft((w.shard, w.level, w.part))
                    if not pending:
                        break
                    shard, level, woke = pending.popleft()
                    report = self.sweep_shard(ctx, shard, level=level)
                    stats = stats.add(report, failed=not _stopped(report, ctx))
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
            if not last and stats.processed == processed_before and self.idle_pause > 0:
                waits.pause(self.idle_pause)
        return stats


def _stopped(report: ShardReport, ctx: Context) -> bool:
    """Whether the report's error, if any, is only the caller's context ending."""
    return report.error is None or (isinstance(report.error, ContextError) and ctx.done())
