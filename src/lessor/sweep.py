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

Every decision above is made by steps that do no I/O (:mod:`lessor.sweep_shard`: one sweep;
:mod:`lessor.sweep_waits`: the waits; :mod:`lessor.sweep_run`: the loop), which the asyncio
sweeper shares; the arguments are checked in :mod:`lessor.sweep_base`. :class:`Sweeper`
performs the steps' operations (:mod:`lessor.sweep_ops`) on the calling thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar

from lessor.context import Context
from lessor.contract import Lessor
from lessor.partition import Partition
from lessor.registry import get, registered
from lessor.sweep_base import LessorKind, SweeperBase
from lessor.sweep_ops import Op, Pause, Process, Scan, SweepShard, UnderLease, drive
from lessor.sweep_run import SweepStats
from lessor.sweep_shard import MAX_LEVEL, ShardReport
from lessor.sweep_waits import Waits, observes

__all__ = ["MAX_LEVEL", "Key", "ShardReport", "SweepStats", "Sweeper"]

Key = int
"""Keys are non-negative ints in the key space; a hex id ``"0a3f"`` is ``int("0a3f", 16)``."""

T = TypeVar("T")

ScanFn = Callable[[Context, Partition], Sequence[T]]
ProcessFn = Callable[[Context, Sequence[T]], object]


class Sweeper(SweeperBase[T, Lessor, ScanFn[T], ProcessFn[T]]):
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

    lessors = LessorKind(Lessor, "a lessor.Lessor or a registered id", registered, get)

    # -- one shard ---------------------------------------------------------------------------

    def sweep_shard(self, ctx: Context, shard: Partition, *, level: int = 0) -> ShardReport:
        """Scan ``shard``, lease what was found, process what was granted; report.

        ``level`` is the shard's depth (0 for the shards of :attr:`shards`, one more for each
        follow-up split). Errors are reported, not raised: the only exceptions are bad
        arguments and failing to resolve a lessor given by id.
        """
        lessor, steps = self._sweep_steps(ctx, shard, level)
        return self._reported(ctx, drive(steps, partial(self._perform, lessor)))

    def _perform(self, lessor: Lessor, op: Op) -> object:
        """Carry out one operation of a sweep on this thread."""
        if isinstance(op, Scan):
            return self._scan(op.ctx, op.shard)
        if isinstance(op, Process):
            return self._process(op.ctx, op.batch)
        assert isinstance(op, UnderLease), op
        with lessor.lease(self.section_id, op.span, self.lease_seconds, ctx=op.ctx) as lease:
            return drive(op.body(lease), partial(self._perform, lessor))

    # -- the loop ----------------------------------------------------------------------------

    def run(self, ctx: Context, *, rounds: int | None = None) -> SweepStats:
        """Sweep every shard in turn, and each one's follow-ups, until ``ctx`` is done.

        A round visits every shard once, starting at a random one and going round in key
        order; follow-up shards a sweep produced are swept before the next shard, and a shard
        whose denied part, or a holder a probe found in it, came free is swept again before
        either (see :class:`Sweeper`). With ``rounds`` given, returns after that many rounds
        (or earlier, when ``ctx`` is done).
        """
        lessor = self._run_lessor(ctx, rounds)
        waits = Waits(lessor, self.section_id, ctx, max_waits=self.max_waits)
        try:
            steps = self._run_steps(ctx, rounds, waits, observes=observes(lessor))
            stats: SweepStats = drive(steps, partial(self._perform_run, ctx, waits))
            return stats
        finally:
            waits.close()

    def _perform_run(self, ctx: Context, waits: Waits, op: Op) -> object:
        """Carry out one operation of the run loop on this thread."""
        if isinstance(op, SweepShard):
            return self.sweep_shard(ctx, op.shard, level=op.level)
        assert isinstance(op, Pause), op
        waits.pause(op.seconds)
        return None
