"""One sweep of one shard (:meth:`Sweeper.sweep_shard <lessor.sweep.Sweeper.sweep_shard>`):
scan it, lease the span of what was found, process what was granted, and report.

The steps and the guarantee are those of :mod:`lessor.sweep`, whose :class:`ShardReport` and
:data:`MAX_LEVEL` live here. :class:`ShardSweep` decides; the synchronous and the asyncio
sweepers perform the operations it yields (:mod:`lessor.sweep_ops`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from lessor.context import Context
from lessor.errors import ContextError
from lessor.lease import Lease
from lessor.partition import Partition, SortedPartitions
from lessor.sweep_ops import Process, Scan, Steps, UnderLease

if TYPE_CHECKING:
    from lessor.sweep_base import SweeperBase

__all__ = ["MAX_LEVEL", "ShardReport", "ShardSweep"]

log = logging.getLogger("lessor.sweep")

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


class ShardSweep(Generic[T]):
    """One sweep of one shard, as operations (:mod:`lessor.sweep_ops`): :meth:`steps` decides
    what to keep of the scan, what to lease, which items lie inside the granted ranges and
    which batches to hand over; a driver performs the scan, the lease and each ``process``.
    Keeps the counts, so that a failure can still report them."""

    def __init__(
        self, ctx: Context, shard: Partition, level: int, settings: SweeperBase[T, Any, Any, Any]
    ) -> None:
        """A sweep of ``shard`` at ``level`` with ``ctx``, as ``settings`` (its sweeper) says:
        its ``key``, ``batch_size``, ``split_threshold`` and ``secondary_shards``."""
        self.ctx = ctx
        self.shard = shard
        self.level = level
        self._settings = settings
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

    def steps(self) -> Steps:
        """The sweep: a :class:`~lessor.sweep_ops.Scan`, then, if anything was kept, an
        :class:`~lessor.sweep_ops.UnderLease` of its span whose body yields a
        :class:`~lessor.sweep_ops.Process` a batch. Returns the :class:`ShardReport`; errors
        go into it, never out (only what is no :class:`Exception`, such as a cancellation,
        propagates)."""
        try:
            self.ctx.raise_if_done()
            items, keys = self._keep((yield Scan(self.ctx, self.shard)))
            if items:
                span = Partition(keys[0], keys[-1] + 1)
                yield UnderLease(self.ctx, span, partial(self._under_lease, items, keys))
        except Exception as e:
            self.error = e
        # Whatever was found and neither processed nor deferred stays for a later sweep.
        self.skipped = self.scanned - self.processed - self.deferred
        return self.report()

    def _keep(self, found: object) -> tuple[Sequence[T], list[int]]:
        """What the sweep keeps of what ``scan`` returned, and their keys; splits the rest."""
        if isinstance(found, (str, bytes)) or not isinstance(found, Sequence):
            raise TypeError(
                f"scan must return a sequence of items, got {type(found).__name__}: {found!r:.80}"
            )
        items: Sequence[T] = found
        self.scanned = len(items)
        keys = [self._settings.key(item) for item in items]
        prev = -1
        for i, k in enumerate(keys):
            if isinstance(k, bool) or not isinstance(k, int):
                raise TypeError(f"key of scanned item {items[i]!r} must be an int, got {k!r}")
            if k not in self.shard:
                raise ValueError(f"scan returned key {k:#x} outside the shard {self.shard}")
            if k < prev:
                raise ValueError(f"scan returned keys out of order: {k:#x} after {prev:#x}")
            prev = k
        if len(items) > self._settings.split_threshold and self.level < MAX_LEVEL:
            keep = self._settings.split_threshold
            self.follow_ups = tuple(
                self.shard.educated_split_after(
                    format(keys[keep - 1], "x"), keep, keep, self._settings.secondary_shards
                )
            )
            # Items sharing the last kept key stay here: the follow-ups start after it.
            while keep < len(keys) and keys[keep] == keys[keep - 1]:
                keep += 1
            self.deferred = len(items) - keep
            items, keys = items[:keep], keys[:keep]
        return items, keys

    def _under_lease(self, items: Sequence[T], keys: list[int], lease: Lease) -> Steps:
        """What is done while ``lease`` is held: the batches of what it granted."""
        self.token = lease.token
        self.leased = tuple(lease.partitions)
        selected = _inside(items, keys, lease.partitions)
        if len(selected) < len(items):
            self.denied = _outside_span(keys, lease.partitions)
        size = self._settings.batch_size
        for i in range(0, len(selected), size):
            if lease.ctx.done():
                # Past the deadline others may hold these keys: leave them for later.
                break
            batch = selected[i : i + size]
            self.processed += len(batch)
            try:
                yield Process(lease.ctx, batch)
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
            except BaseException:
                # Cut short from outside: under asyncio, cancelled at the lease's deadline
                # (the lease reports that), or the run itself cancelled.
                self.failed += len(batch)
                raise


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
