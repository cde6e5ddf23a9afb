"""What the sweep's decisions ask a driver to do: the operations they yield, and how a driver
feeds the results back.

The sweep decides in generators that never call a lessor, a callback or anything that
blocks: one sweep of a shard (:mod:`lessor.sweep_shard`), a wait for a range to come free
(:mod:`lessor.sweep_waits`) and the run loop (:mod:`lessor.sweep_run`). Each yields one of
these operations and receives its result, or has its failure thrown into it, the way h11 and
h2 keep protocol logic apart from sockets (the etcd acquisition core does the same:
:mod:`lessor.etcd.ops`). The synchronous :class:`~lessor.sweep.Sweeper` performs them on its
thread, ``lessor.aio.Sweeper`` in its event loop; neither decides anything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from lessor.context import Context
from lessor.lease import Lease
from lessor.partition import Partition

__all__ = [
    "IsHeld",
    "Op",
    "Outcome",
    "Pause",
    "Process",
    "Scan",
    "Sleep",
    "Stepping",
    "Steps",
    "SweepShard",
    "UnderLease",
    "WaitFree",
    "drive",
    "drive_async",
]


@dataclass(frozen=True, slots=True)
class Scan:
    """Call the sweeper's ``scan(ctx, shard)``. Result: what it returned, unchecked."""

    ctx: Context
    shard: Partition


@dataclass(frozen=True, slots=True)
class UnderLease:
    """Lease ``span`` in the sweeper's section for its ``lease_seconds``, with ``ctx``; while
    it is held, perform the steps ``body(lease)``; then give it back. Result: what the body
    returns. A failure to lease, the body's own, and the lease's end (under asyncio, the body
    cancelled at the deadline) are thrown in."""

    ctx: Context
    span: Partition
    body: Callable[[Lease], Steps]


@dataclass(frozen=True, slots=True)
class Process:
    """Call the sweeper's ``process(ctx, batch)``; ``ctx`` is the lease's. Result: ignored."""

    ctx: Context
    batch: Sequence[Any]


@dataclass(frozen=True, slots=True)
class SweepShard:
    """Sweep ``shard`` at ``level`` with the sweeper's ``sweep_shard``. Result: its
    :class:`~lessor.sweep_shard.ShardReport`."""

    shard: Partition
    level: int


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait ``seconds``, or less: until the run's context is done or one of its waits came
    free (the run's ``Waits.pause``). Result: None."""

    seconds: float


@dataclass(frozen=True, slots=True)
class WaitFree:
    """The lessor's ``wait_free(ctx, section, part)`` in the sweeper's section. Result: its
    answer."""

    ctx: Context
    part: Partition


@dataclass(frozen=True, slots=True)
class IsHeld:
    """The lessor's ``is_held(ctx, section, part)`` in the sweeper's section. Result: its
    answer."""

    ctx: Context
    part: Partition


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait ``seconds``, or less once ``ctx`` is done. Result: whether ``ctx`` is done."""

    ctx: Context
    seconds: float


Op = Scan | UnderLease | Process | SweepShard | Pause | WaitFree | IsHeld | Sleep

Steps = Generator[Op, Any, Any]
"""A piece of the sweep: yields operations, receives their results, returns its answer."""


class Outcome:
    """An operation's result, or the exception it raised, to hand back to its steps."""

    __slots__ = ("error", "value")

    def __init__(self, value: object = None, error: BaseException | None = None) -> None:
        self.value = value
        self.error = error

    @classmethod
    def of(cls, perform: Callable[[Op], object], op: Op) -> Outcome:
        """What ``perform(op)`` returned or raised (anything: the steps decide what it means,
        and let out what they do not handle)."""
        try:
            return cls(perform(op))
        except BaseException as e:
            return cls(error=e)

    @classmethod
    async def awaited(cls, perform: Callable[[Op], Awaitable[object]], op: Op) -> Outcome:
        """What awaiting ``perform(op)`` returned or raised, a cancel of the task included
        (the steps let it out)."""
        try:
            return cls(await perform(op))
        except BaseException as e:
            return cls(error=e)


class Stepping:
    """Steps under way: :attr:`op` is the operation they wait on, None once they ended with
    :attr:`value`. Use it as a context manager: leaving it closes steps left unfinished (an
    exception out of the driver), so that their ``finally`` clauses run."""

    __slots__ = ("_steps", "op", "value")

    def __init__(self, steps: Steps) -> None:
        self._steps = steps
        self.op: Op | None = None
        self.value: Any = None
        self.resume(Outcome())

    def resume(self, outcome: Outcome) -> None:
        """Hand ``outcome`` to the steps; what they yield next becomes :attr:`op`. An
        exception the steps let out propagates."""
        try:
            if outcome.error is None:
                self.op = self._steps.send(outcome.value)
            else:
                self.op = self._steps.throw(outcome.error)
        except StopIteration as end:
            self.op, self.value = None, end.value

    def __enter__(self) -> Stepping:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._steps.close()


def drive(steps: Steps, perform: Callable[[Op], object]) -> Any:
    """Perform ``steps``' operations with ``perform`` on this thread until they end; return
    what they return."""
    with Stepping(steps) as run:
        while run.op is not None:
            run.resume(Outcome.of(perform, run.op))
    return run.value


async def drive_async(steps: Steps, perform: Callable[[Op], Awaitable[object]]) -> Any:
    """:func:`drive` in an event loop: await ``perform(op)`` for each operation. A cancel of
    the task is thrown into ``steps`` like any failure; they let it out."""
    with Stepping(steps) as run:
        while run.op is not None:
            run.resume(await Outcome.awaited(perform, run.op))
    return run.value
