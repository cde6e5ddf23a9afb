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
between two other sweeps, rather than a round later (see :class:`Sweeper`).
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
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar, cast

from lessor.context import Context, seconds
from lessor.contract import Lessor
from lessor.errors import ContextError
from lessor.partition import Partition, SortedPartitions
from lessor.registry import get, registered

__all__ = ["MAX_LEVEL", "Key", "ShardReport", "SweepStats", "Sweeper"]

log = logging.getLogger("lessor.sweep")

Key = int
"""Keys are non-negative ints in the key space; a hex id ``"0a3f"`` is ``int("0a3f", 16)``."""

T = TypeVar("T")

MAX_LEVEL = 2
"""Shards this deep are never split further (LUCI: "Refuse to scan deeper than 2 levels")."""


@dataclass(frozen=True, slots=True)
class ShardReport:
    """What one sweep of one shard did.

    ``scanned`` counts the items ``scan`` returned; each of them is counted once more in
    exactly one of ``processed`` (handed to ``process``), ``skipped`` (outside the granted
    ranges, or found after the lease's deadline passed) and ``deferred`` (past the split
    point: left to the ``follow_ups``). ``failed`` counts the processed items whose batch
    raised (a batch cut short by a ``lessor.ContextError`` once the lease's deadline passed
    counts here too, but is no ``error``). ``error`` is the first error of the sweep, if any;
    ``token`` the lease's fencing token, None when nothing was leased. ``denied`` is the span of
    the items found but not granted (held by another lease), None when every item leased was
    granted: :meth:`Sweeper.run` waits for it to come free.
    """

    shard: Partition
    scanned: int
    leased: tuple[Partition, ...]
    processed: int
    skipped: int
    token: int | None
    error: BaseException | None
    elapsed: float
    level: int = 0
    deferred: int = 0
    failed: int = 0
    follow_ups: tuple[Partition, ...] = ()
    denied: Partition | None = None


@dataclass(frozen=True, slots=True)
class SweepStats:
    """Totals over the :class:`ShardReport` objects of a :meth:`Sweeper.run`.

    ``resweeps`` counts the sweeps (among ``shards_swept``) of a shard swept again because a
    part it had been denied came free.
    """

    shards_swept: int = 0
    scanned: int = 0
    processed: int = 0
    skipped: int = 0
    errors: int = 0
    rounds: int = 0
    resweeps: int = 0

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


def _positive_int(name: str, value: object, *, zero: bool = False) -> int:
    """``value`` if it is an int above 0 (or 0, with ``zero``), else the error naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}: {value!r}")
    if value < 0 or (value == 0 and not zero):
        raise ValueError(f"{name} must be {'>= 0' if zero else 'positive'}, got {value}")
    return value


def _callable(name: str, value: object) -> None:
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}: {value!r}")


class Sweeper(Generic[T]):
    """Sweeps a key space cut into ``shards`` shards; see the module documentation.

    ``lessor`` is a :class:`~lessor.contract.Lessor` or the id of a registered one (resolved
    with :func:`lessor.get` and the context of the first sweep). ``rng`` picks the first shard
    of :meth:`run` (so sweepers that start together spread over the key space).
    ``idle_pause`` is how long :meth:`run` waits after a round that processed nothing, so an
    empty key space is not scanned in a busy loop.

    **A denied shard is swept again as soon as it comes free.** When a sweep in :meth:`run` is
    denied some of the items it found (another lease holds them: a sweeper at work, or a dead
    one whose lease has not yet expired), ``run`` calls
    :meth:`~lessor.contract.Lessor.wait_free` on the span of those items in a background
    thread, once the sweep's own lease was given back, and goes on with its round. When that
    returns True, the shard is swept again (a fresh scan under a fresh lease) before the next
    sweep of the round, or at once when ``run`` is in its idle pause, which it cuts short.
    Sweeps are still made one at a time, by the thread that called ``run``, each under its
    lease: processing stays at least once and never concurrent. The bounds:

    * a shard is swept again on a wake-up at most once per round (a later wake-up waits for
      the next round), so a round makes at most twice its sweeps and a contested shard cannot
      take a worker over;
    * a sweep made on a wake-up that processed nothing (the wake-up was early, or another
      sweeper got there first) starts no wait: the shard's next regular visit looks again;
    * at most ``max_waits`` waits at once: a denied shard beyond them (every one, with
      ``max_waits=0``) waits for its regular visit in the next round, as without waiting;
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
        rng: random.Random | None = None,
        on_error: Callable[[ShardReport, BaseException], None] | None = None,
    ) -> None:
        if isinstance(lessor, str):
            if lessor not in registered():
                known = ", ".join(repr(i) for i in registered()) or "none"
                raise ValueError(f"lessor {lessor!r} is not registered (registered: {known})")
        elif not isinstance(lessor, Lessor):
            raise TypeError(
                f"lessor must be a lessor.Lessor or a registered id, got "
                f"{type(lessor).__name__}: {lessor!r}"
            )
        if not isinstance(section_id, str):
            raise TypeError(
                f"section_id must be a str, got {type(section_id).__name__}: {section_id!r}"
            )
        if not section_id:
            raise ValueError("section_id must not be empty")
        if not isinstance(key_space, Partition):
            raise TypeError(
                f"key_space must be a lessor.Partition, got {type(key_space).__name__}: "
                f"{key_space!r}"
            )
        if key_space.is_empty():
            raise ValueError(f"key_space must not be empty, got {key_space}")
        _positive_int("shards", shards)
        _callable("scan", scan)
        _callable("process", process)
        if key is not None:
            _callable("key", key)
        lease_dur = seconds(lease_seconds, "lease_seconds")
        if not 0 < lease_dur < math.inf:
            raise ValueError(f"lease_seconds must be positive and finite, got {lease_seconds!r}")
        _positive_int("batch_size", batch_size)
        _positive_int("split_threshold", split_threshold)
        _positive_int("secondary_shards", secondary_shards)
        pause = seconds(idle_pause, "idle_pause")
        if not 0 <= pause < math.inf:
            raise ValueError(f"idle_pause must be >= 0 and finite, got {idle_pause!r}")
        _positive_int("max_waits", max_waits, zero=True)
        if rng is not None and not isinstance(rng, random.Random):
            raise TypeError(f"rng must be a random.Random or None, got {rng!r}")
        if on_error is not None:
            _callable("on_error", on_error)

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
        if not isinstance(ctx, Context):
            raise TypeError(f"ctx must be a lessor.Context, got {type(ctx).__name__}: {ctx!r}")
        if not isinstance(shard, Partition):
            raise TypeError(
                f"shard must be a lessor.Partition, got {type(shard).__name__}: {shard!r}"
            )
        if isinstance(level, bool) or not isinstance(level, int):
            raise TypeError(f"level must be an int, got {type(level).__name__}: {level!r}")
        if not 0 <= level <= MAX_LEVEL:
            raise ValueError(f"level must be in 0..{MAX_LEVEL}, got {level}")
        if shard.is_empty() or not (
            self.key_space.low <= shard.low and shard.high <= self.key_space.high
        ):
            raise ValueError(
                f"shard {shard} must be a non-empty part of the key space {self.key_space}"
            )
        lessor = self._resolve(ctx)
        run = _ShardSweep(self, lessor, ctx, shard, level)
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
        whose denied part came free is swept again before either (see :class:`Sweeper`). With
        ``rounds`` given, returns after that many rounds (or earlier, when ``ctx`` is done).
        """
        if not isinstance(ctx, Context):
            raise TypeError(f"ctx must be a lessor.Context, got {type(ctx).__name__}: {ctx!r}")
        if rounds is not None:
            _positive_int("rounds", rounds)
        waits = _Waits(self, ctx)
        try:
            return self._run(ctx, rounds, waits)
        finally:
            waits.close()

    def _run(self, ctx: Context, rounds: int | None, waits: _Waits) -> SweepStats:
        stats = SweepStats()
        n = len(self.shards)
        start = self._rng.randrange(n)
        while not ctx.done() and (rounds is None or stats.rounds < rounds):
            processed_before = stats.processed
            woken: set[Partition] = set()  # shards swept again on a wake-up in this round
            for i in range(n):
                visit = self.shards[(start + i) % n]
                waits.drop_inside(visit)  # this visit sweeps it and its parts afresh
                pending: deque[tuple[Partition, int, bool]] = deque([(visit, 0, False)])
                while not ctx.done():
                    for freed, level in waits.take_freed(woken):  # first: as soon as possible
                        woken.add(freed)
                        pending.appendleft((freed, level, True))
                    if not pending:
                        break
                    shard, level, again = pending.popleft()
                    report = self.sweep_shard(ctx, shard, level=level)
                    stats = stats.add(report, failed=not _stopped(report, ctx))
                    if again:
                        stats = replace(stats, resweeps=stats.resweeps + 1)
                    pending.extend((p, level + 1, False) for p in report.follow_ups)
                    if report.denied is not None and (report.processed or not again):
                        waits.start(shard, level, report.denied)
                if ctx.done():
                    return stats  # an interrupted round is not counted
            stats = replace(stats, rounds=stats.rounds + 1)
            last = rounds is not None and stats.rounds >= rounds
            if not last and stats.processed == processed_before and self.idle_pause > 0:
                waits.pause(self.idle_pause)
        return stats


@dataclass(frozen=True, slots=True, eq=False)
class _Wait:
    """One background ``wait_free`` on the denied ``part`` of ``shard``."""

    shard: Partition
    level: int
    part: Partition
    ctx: Context


_WAIT_KEY = object()  # a key only to make a child context: nothing reads it
_JOIN_SECONDS = 5.0  # how long closing waits for the threads whose contexts it ended


class _Waits:
    """The denied parts one :meth:`Sweeper.run` waits on, a thread each; see :class:`Sweeper`.

    Every wait's context is a child of one context of the run's, which :meth:`close` cancels.
    """

    def __init__(self, sweeper: Sweeper[Any], ctx: Context) -> None:
        self._sweeper = sweeper
        self._ctx = ctx.with_value(_WAIT_KEY, None)
        self._lock = threading.Lock()
        self._waiting: dict[Partition, _Wait] = {}
        self._freed: deque[tuple[Partition, int]] = deque()
        self._threads: set[threading.Thread] = set()
        self._pause: Context | None = None

    def start(self, shard: Partition, level: int, part: Partition) -> None:
        """Wait for ``part`` of ``shard`` to come free (unless at the bound or ending)."""
        sweeper = self._sweeper
        with self._lock:
            old = self._waiting.pop(shard, None)
            if old is not None:
                old.ctx.cancel()  # the newer sweep's denial replaces it
            if self._ctx.done() or len(self._waiting) >= sweeper.max_waits:
                return
            wait = _Wait(shard, level, part, self._ctx.with_value(_WAIT_KEY, None))
            self._waiting[shard] = wait
            thread = threading.Thread(
                target=self._wait, args=(wait,), name=f"lessor-sweep-wait {shard}", daemon=True
            )
            self._threads.add(thread)
        thread.start()

    def _wait(self, wait: _Wait) -> None:
        freed = False
        try:
            lessor = self._sweeper._resolve(wait.ctx)
            freed = lessor.wait_free(wait.ctx, self._sweeper.section_id, wait.part)
        except Exception as e:
            if not wait.ctx.done():
                log.warning(
                    "waiting for %s of shard %s to come free failed, so it waits for the next "
                    "round: %s",
                    wait.part,
                    wait.shard,
                    e,
                )
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())
                if self._waiting.get(wait.shard) is wait:
                    del self._waiting[wait.shard]
                    if freed and all(f[0] != wait.shard for f in self._freed):
                        self._freed.append((wait.shard, wait.level))
                        if self._pause is not None:
                            self._pause.cancel()

    def take_freed(self, later: set[Partition]) -> list[tuple[Partition, int]]:
        """The shards (and levels) whose waits returned True, but those in ``later``, which
        stay queued."""
        with self._lock:
            taken = [f for f in self._freed if f[0] not in later]
            if taken:
                self._freed = deque(f for f in self._freed if f[0] in later)
        return taken

    def drop_inside(self, shard: Partition) -> None:
        """Forget the waits, and the freed shards, that lie inside ``shard``."""
        with self._lock:
            for inner in [p for p in self._waiting if shard.low <= p.low and p.high <= shard.high]:
                self._waiting.pop(inner).ctx.cancel()
            kept = [
                f for f in self._freed if not (shard.low <= f[0].low and f[0].high <= shard.high)
            ]
            self._freed = deque(kept)

    def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less: until the run's context is done or a wait returns True."""
        with self._lock:
            if self._freed:
                return
            self._pause = pause = self._ctx.with_timeout(seconds)
        try:
            pause.wait()
        finally:
            with self._lock:
                self._pause = None

    def close(self) -> None:
        """End every wait, and give their threads a moment to return."""
        self._ctx.cancel()
        with self._lock:
            threads = list(self._threads)
            self._waiting.clear()
            self._freed.clear()
        limit = time.monotonic() + _JOIN_SECONDS
        for thread in threads:
            thread.join(max(0.0, limit - time.monotonic()))
            if thread.is_alive():
                log.warning("%s did not end with its context: a wait_free ignores it", thread.name)


def _stopped(report: ShardReport, ctx: Context) -> bool:
    """Whether the report's error, if any, is only the caller's context ending."""
    return report.error is None or (isinstance(report.error, ContextError) and ctx.done())


class _ShardSweep(Generic[T]):
    """One sweep of one shard; keeps the counts so that a failure can still report them."""

    def __init__(
        self, sweeper: Sweeper[T], lessor: Lessor, ctx: Context, shard: Partition, level: int
    ) -> None:
        self.s = sweeper
        self.lessor = lessor
        self.ctx = ctx
        self.shard = shard
        self.level = level
        self.t0 = time.monotonic()
        self.scanned = 0
        self.leased: tuple[Partition, ...] = ()
        self.processed = 0
        self.skipped = 0
        self.deferred = 0
        self.failed = 0
        self.token: int | None = None
        self.error: BaseException | None = None
        self.follow_ups: tuple[Partition, ...] = ()
        self.denied: Partition | None = None

    def report(self) -> ShardReport:
        return ShardReport(
            shard=self.shard,
            scanned=self.scanned,
            leased=self.leased,
            processed=self.processed,
            skipped=self.skipped,
            token=self.token,
            error=self.error,
            elapsed=time.monotonic() - self.t0,
            level=self.level,
            deferred=self.deferred,
            failed=self.failed,
            follow_ups=self.follow_ups,
            denied=self.denied,
        )

    def sweep(self) -> ShardReport:
        try:
            self.ctx.raise_if_done()
            items, keys = self._scan()
            if items:
                self._lease_and_process(items, keys)
        except Exception as e:
            self.error = e
        # Whatever was found and neither processed nor deferred stays for a later sweep.
        self.skipped = self.scanned - self.processed - self.deferred
        return self.report()

    def _scan(self) -> tuple[Sequence[T], list[int]]:
        found = self.s._scan(self.ctx, self.shard)
        if isinstance(found, (str, bytes)) or not isinstance(found, Sequence):
            raise TypeError(
                f"scan must return a sequence of items, got {type(found).__name__}: {found!r:.80}"
            )
        items: Sequence[T] = found
        self.scanned = len(items)
        keys = [self.s._key(item) for item in items]
        prev = -1
        for i, k in enumerate(keys):
            if isinstance(k, bool) or not isinstance(k, int):
                raise TypeError(f"key of scanned item {items[i]!r} must be an int, got {k!r}")
            if k not in self.shard:
                raise ValueError(f"scan returned key {k:#x} outside the shard {self.shard}")
            if k < prev:
                raise ValueError(f"scan returned keys out of order: {k:#x} after {prev:#x}")
            prev = k
        if len(items) > self.s.split_threshold and self.level < MAX_LEVEL:
            keep = self.s.split_threshold
            self.follow_ups = tuple(
                self.shard.educated_split_after(
                    format(keys[keep - 1], "x"), keep, keep, self.s.secondary_shards
                )
            )
            # Items sharing the last kept key stay here: the follow-ups start after it.
            while keep < len(keys) and keys[keep] == keys[keep - 1]:
                keep += 1
            self.deferred = len(items) - keep
            items, keys = items[:keep], keys[:keep]
        return items, keys

    def _lease_and_process(self, items: Sequence[T], keys: list[int]) -> None:
        span = Partition(keys[0], keys[-1] + 1)
        with self.lessor.lease(
            self.s.section_id, span, self.s.lease_seconds, ctx=self.ctx
        ) as lease:
            self.token = lease.token
            self.leased = tuple(lease.partitions)
            selected = _inside(items, keys, lease.partitions)
            if len(selected) < len(items):
                self.denied = _outside_span(keys, lease.partitions)
            size = self.s.batch_size
            for i in range(0, len(selected), size):
                if lease.ctx.done():
                    # Past the deadline others may hold these keys: leave them for later.
                    break
                batch = selected[i : i + size]
                self.processed += len(batch)
                try:
                    self.s._process(lease.ctx, batch)
                except Exception as e:
                    self.failed += len(batch)
                    if isinstance(e, ContextError) and lease.ctx.done():
                        # process stopped because the lease ran out, as it should: the rest
                        # of the batch stays for a later sweep, and that is no failure.
                        break
                    if self.error is None:
                        self.error = e
                    else:
                        log.warning("sweep of shard %s: another batch failed: %s", self.shard, e)


def _outside_span(keys: list[int], parts: SortedPartitions) -> Partition | None:
    """The span from the first to the last of ``keys`` (sorted) that no part holds."""
    outside = [k for k in keys if not parts.contains_key(k)]
    return Partition(outside[0], outside[-1] + 1) if outside else None


def _inside(items: Sequence[T], keys: list[int], parts: SortedPartitions) -> list[T]:
    """The items whose key lies in one of ``parts``; both sorted, so one merge pass."""
    out: list[T] = []
    j = 0
    for item, k in zip(items, keys, strict=True):
        while j < len(parts) and parts[j].high <= k:
            j += 1
        if j == len(parts):
            break
        if parts[j].low <= k:
            out.append(item)
    return out
