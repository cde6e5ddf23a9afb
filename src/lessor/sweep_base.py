"""What the synchronous sweeper (:class:`lessor.sweep.Sweeper`) and the asyncio one
(``lessor.aio.Sweeper``) share: their arguments, checked once, the lessor they resolve, and the
steps of their decisions (:mod:`lessor.sweep_shard`, :mod:`lessor.sweep_run`), which each
performs in its own way. The behaviour is documented once, in :mod:`lessor.sweep`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar, cast

from lessor import checks
from lessor.context import Context
from lessor.partition import Partition, SortedPartitions
from lessor.sweep_ops import Steps
from lessor.sweep_run import run_steps, stopped
from lessor.sweep_shard import MAX_LEVEL, ShardReport, ShardSweep
from lessor.sweep_waits import WaitControl

__all__ = ["LessorKind", "SweeperBase"]

log = logging.getLogger("lessor.sweep")

T = TypeVar("T")
L = TypeVar("L")  # the lessor class
S = TypeVar("S", bound=Callable[..., object])  # scan
P = TypeVar("P", bound=Callable[..., object])  # process


@dataclass(frozen=True, slots=True)
class LessorKind:
    """How a sweeper gets its lessor: ``cls`` is what an instance must be (``what`` says so in
    the error), and an id is resolved by ``get`` among ``registered``."""

    cls: type
    what: str
    registered: Callable[[], list[str]]
    get: Callable[[Context, str], object]


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


class SweeperBase(Generic[T, L, S, P]):
    """The arguments of a sweeper and the steps of its decisions; a subclass names its
    :attr:`lessors` and performs the steps. See :mod:`lessor.sweep`."""

    lessors: ClassVar[LessorKind]
    """What this kind of sweeper takes as its lessor."""

    def __init__(
        self,
        lessor: L | str,
        section_id: str,
        key_space: Partition,
        *,
        shards: int,
        scan: S,
        process: P,
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
        self._check_lessor(lessor)
        checks.section_id(section_id)
        checks.partition(key_space, "key_space", empty=False)
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
        self._lessor: L | None = None if isinstance(lessor, str) else lessor
        self.section_id = section_id
        self.key_space = key_space
        self.shards: SortedPartitions = key_space.split(shards)
        self._scan = scan
        self._process = process
        self.key: Callable[[T], int] = key if key is not None else _int_key
        self.lease_seconds = lease_dur
        self.batch_size = batch_size
        self.split_threshold = split_threshold
        self.secondary_shards = secondary_shards
        self.idle_pause = pause
        self.max_waits = max_waits
        self.probes = probes
        self._rng = rng if rng is not None else random.Random()
        self._on_error = on_error if on_error is not None else _log_error

    def _check_lessor(self, lessor: object) -> None:
        kind = self.lessors
        if isinstance(lessor, str):
            if lessor not in kind.registered():
                known = ", ".join(repr(i) for i in kind.registered()) or "none"
                raise ValueError(f"lessor {lessor!r} is not registered (registered: {known})")
        elif not isinstance(lessor, kind.cls):  # abstract: checks.instance cannot take it
            raise checks.wrong_type(lessor, "lessor", kind.what)

    def _resolve(self, ctx: Context) -> L:
        """The lessor: the one given, or the one its id names (got once, with ``ctx``)."""
        if self._lessor is None:
            assert self._lessor_id is not None
            self._lessor = cast(L, self.lessors.get(ctx, self._lessor_id))
        return self._lessor

    def _sweep_steps(self, ctx: Context, shard: Partition, level: int) -> tuple[L, Steps]:
        """The lessor and the steps of a sweep of ``shard`` (:meth:`Sweeper.sweep_shard`),
        once its arguments are checked."""
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
        return lessor, ShardSweep(ctx, shard, level, self).steps()

    def _reported(self, ctx: Context, report: ShardReport) -> ShardReport:
        """``report``, once its error, if any, went to ``on_error``."""
        if report.error is not None and not stopped(report, ctx):
            # The caller's own context ending is how a sweep is stopped, not a failure.
            self._on_error(report, report.error)
        return report

    def _run_lessor(self, ctx: Context, rounds: int | None) -> L:
        """The lessor of a :meth:`Sweeper.run`, once its arguments are checked."""
        checks.context(ctx)
        if rounds is not None:
            checks.count(rounds, "rounds")
        return self._resolve(ctx)

    def _run_steps(
        self, ctx: Context, rounds: int | None, waits: WaitControl, *, observes: bool
    ) -> Steps:
        """The steps of :meth:`Sweeper.run`; probes only with a lessor that ``observes`` its
        holders."""
        return run_steps(
            ctx,
            rounds,
            shards=self.shards,
            rng=self._rng,
            idle_pause=self.idle_pause,
            waits=waits,
            probes=self.probes if observes else 0,
        )
