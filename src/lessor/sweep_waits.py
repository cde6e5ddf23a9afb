"""What one :meth:`Sweeper.run <lessor.sweep.Sweeper.run>` waits for in the background: ranges
other holders have in its section, so that it sweeps them as soon as they come free.

Two kinds of wait, each a thread blocked in :meth:`~lessor.contract.Lessor.wait_free`:

* **A denied part.** A sweep was denied some of the items it found: another lease holds them.
  ``run`` waits for that span (:meth:`Waits.start`) and sweeps the shard again when it frees.
* **A probe.** After a sweep that was granted something, ``run`` looks at a few other shards
  of the key space (:meth:`Waits.probe`, in the order :class:`ProbeCycle` keeps): an
  :meth:`~lessor.contract.Lessor.is_held` of a whole shard. When nothing there is held, the
  probe ends, having cost one look (for etcd, one read). When something is, another sweeper
  is at work in that shard, and the probe *follows* it: a ``wait_free`` on the shard, and each
  time a holder gives back or its lease runs out, the probe gives a live sweeper
  :data:`GRACE` seconds to take its next lease there and looks again. While anyone holds a
  range of the shard, that is all (a look and a wait per give-back: no scan, no lease,
  nobody's work taken over). Once nobody does, the holders it followed have left: ``run``
  sweeps the shard. A sweeper that finished it leaves nothing to find (one empty scan); one
  that died leaves the work it held and the parts it had not reached. That is how a dead
  sweeper's work is found as soon as its lease ends, before anyone's round reaches its shard,
  although nobody had been denied it.

  Each look asks the lessor what is held, so however long it takes to answer (etcd across
  datacenters, a loaded member), a probe of a shard nobody holds ends after one look, and one
  that followed a holder sweeps the shard once nobody holds any of it. Probes are made only
  with a lessor that observes its holders (:func:`observes`: one that overrides both
  :meth:`~lessor.contract.Lessor._wait_free` and :meth:`~lessor.contract.Lessor._is_held`):
  the contract's polling default of ``_wait_free`` would answer every wait after a back-off,
  with or without holders, and its ``_is_held`` cannot tell what is held.

A wait that returns True queues its shard for ``run`` (:meth:`Waits.take_freed`), and cuts
its idle pause short (:meth:`Waits.pause`). Every wait's context is a child of the run's own,
which :meth:`Waits.close` cancels. At most ``max_waits`` waits at once: at the bound, a denied
part takes the place of the oldest probe, and no probe starts.

The decisions are apart from the threads, and shared with the asyncio sweeper (whose waits
are tasks): :class:`WaitBook` keeps which waits are on and which shards came free, and
:func:`watch` is what one wait does, as operations (:mod:`lessor.sweep_ops`). :class:`Waits`
runs each wait on a thread of its own.
"""

from __future__ import annotations

import abc
import logging
import threading
from collections import deque
from contextlib import AbstractContextManager
from dataclasses import dataclass
from time import monotonic
from typing import Protocol

from lessor.context import Context
from lessor.contract import Lessor
from lessor.partition import Partition, SortedPartitions
from lessor.sweep_ops import IsHeld, Op, Sleep, Steps, WaitFree, drive

__all__ = [
    "GRACE",
    "JOIN_SECONDS",
    "BookedWaits",
    "ProbeCycle",
    "Wait",
    "WaitBook",
    "WaitControl",
    "Waits",
    "Woken",
    "child",
    "observes",
    "overrides_hooks",
    "watch",
]

log = logging.getLogger("lessor.sweep")

GRACE = 0.2
"""Seconds a probe gives a holder that gave back to take its next lease in the same shard
(a sweeper moving on to the next part of it) before it looks again."""

JOIN_SECONDS = 5.0
"""How long closing a run's waits waits for them to end, once it ended them."""

_WAIT_KEY = object()  # a key only to make a child context: nothing reads it
_HOOKS = ("_wait_free", "_is_held")  # what a backend that observes its holders overrides


def observes(lessor: Lessor) -> bool:
    """Whether ``lessor`` observes its holders, so that it can answer a probe: its backend
    overrides both :meth:`~lessor.contract.Lessor._wait_free` and
    :meth:`~lessor.contract.Lessor._is_held`."""
    return overrides_hooks(lessor, Lessor)


def child(ctx: Context) -> Context:
    """A child of ``ctx``, to be cancelled apart: a run's waits, and each wait."""
    return ctx.with_value(_WAIT_KEY, None)


def overrides_hooks(lessor: object, base: type) -> bool:
    """Whether the class of ``lessor`` overrides both ``_wait_free`` and ``_is_held`` of
    ``base`` (its contract's class): :func:`observes`, for either contract."""
    kind = type(lessor)
    return all(getattr(kind, hook) is not getattr(base, hook) for hook in _HOOKS)


@dataclass(frozen=True, slots=True)
class Woken:
    """A wait that returned True: sweep ``shard`` (at ``level``) again; ``part`` is what
    was waited on (the denied span, or the whole shard for a probe)."""

    shard: Partition
    level: int
    part: Partition


@dataclass(frozen=True, slots=True, eq=False)
class Wait:
    """One wait of a run: on ``part`` of ``shard`` (at ``level``), a probe or a denied part.
    Compared by identity: a newer wait on the same shard is another one."""

    shard: Partition
    level: int
    part: Partition
    probe: bool


def _inside(outer: Partition, p: Partition) -> bool:
    return outer.low <= p.low and p.high <= outer.high


class WaitBook:
    """Which waits a run has on, and which shards came free: every decision of :class:`Waits`,
    with no thread and no lock, so that the synchronous and the asyncio sweepers share it.

    Its caller starts what :meth:`start` and :meth:`probe` return, ends what they and
    :meth:`drop_inside` return (a wait ended so does nothing more: its end is no wake-up), and
    tells :meth:`ended` when a wait has returned.
    """

    def __init__(self, max_waits: int) -> None:
        self._max = max_waits
        self._waiting: dict[Partition, Wait] = {}  # by shard; insertion order: oldest first
        self._freed: deque[Woken] = deque()

    def start(
        self, shard: Partition, level: int, part: Partition
    ) -> tuple[Wait | None, list[Wait]]:
        """A wait for the denied ``part`` of ``shard`` (None at the bound), and the waits it
        replaces: the older one on ``shard`` and, at the bound, the oldest probe."""
        replaced: list[Wait] = []
        old = self._waiting.pop(shard, None)
        if old is not None:
            replaced.append(old)  # the newer sweep's denial replaces it
        if len(self._waiting) >= self._max:
            probe = next((w for w in self._waiting.values() if w.probe), None)
            if probe is None:
                return None, replaced
            replaced.append(self._waiting.pop(probe.shard))
        return self._add(Wait(shard, level, part, probe=False)), replaced

    def probe(self, shard: Partition) -> Wait | None:
        """A probe of ``shard`` (level 0); None at the bound, or when a wait on (part of) it
        is on already or queued."""
        if len(self._waiting) >= self._max or self.watching(shard):
            return None
        return self._add(Wait(shard, 0, shard, probe=True))

    def _add(self, wait: Wait) -> Wait:
        self._waiting[wait.shard] = wait
        return wait

    def watching(self, shard: Partition) -> bool:
        """Whether a wait on ``shard`` or a part of it is on, or one of them is queued."""
        return any(_inside(shard, p) for p in self._waiting) or any(
            _inside(shard, f.shard) for f in self._freed
        )

    def ended(self, wait: Wait, freed: bool) -> bool:
        """``wait`` returned ``freed``; whether that queued its shard (a wake-up). A wait that
        was ended or replaced queues nothing, nor one whose shard is queued already."""
        if self._waiting.get(wait.shard) is not wait:
            return False
        del self._waiting[wait.shard]
        if not freed or any(f.shard == wait.shard for f in self._freed):
            return False
        self._freed.append(Woken(wait.shard, wait.level, wait.part))
        return True

    @property
    def woken(self) -> bool:
        """Whether a shard is queued."""
        return bool(self._freed)

    def take_freed(self) -> list[Woken]:
        """The queued shards, oldest first; the queue is emptied."""
        taken = list(self._freed)
        self._freed.clear()
        return taken

    def drop_inside(self, shard: Partition) -> list[Wait]:
        """Forget the waits, and the queued shards, that lie inside ``shard``; the waits to
        end."""
        dropped = [self._waiting.pop(p) for p in [p for p in self._waiting if _inside(shard, p)]]
        self._freed = deque(f for f in self._freed if not _inside(shard, f.shard))
        return dropped

    def clear(self) -> None:
        """Forget every wait and every queued shard (the run is over)."""
        self._waiting.clear()
        self._freed.clear()


def watch(wait: Wait, ctx: Context) -> Steps:
    """The steps of ``wait``, until its ``ctx`` ends: returns whether its shard is to be swept
    again. A denied part is one :class:`~lessor.sweep_ops.WaitFree`; a probe follows the
    holders of its shard (:func:`_follow`). A failure is logged and is no wake-up: the shard
    waits for its next round."""
    try:
        if wait.probe:
            return (yield from _follow(wait, ctx))
        return bool((yield WaitFree(ctx, wait.part)))
    except Exception as e:
        if not ctx.done():
            log.warning(
                "waiting for %s of shard %s to come free failed, so it waits for the next "
                "round: %s",
                wait.part,
                wait.shard,
                e,
            )
        return False


def _follow(wait: Wait, ctx: Context) -> Steps:
    """A probe: follow the holders of ``wait.shard`` until none is left (True), or until
    ``ctx`` ends (False, or the context's error from ``is_held``); False after one look when
    nothing of it was held."""
    followed = False
    while True:
        if not (yield IsHeld(ctx, wait.part)):
            return followed  # nothing held now: every holder we saw is gone
        if not (yield WaitFree(ctx, wait.part)):
            return False
        followed = True  # a holder gave back or expired; a live one goes on within GRACE
        if (yield Sleep(ctx, GRACE)):
            return False


class WaitControl(Protocol):
    """What the run loop (:mod:`lessor.sweep_run`) and :class:`ProbeCycle` ask of a run's
    waits, none of which blocks: :class:`Waits`, and the asyncio sweeper's."""

    def start(self, shard: Partition, level: int, part: Partition) -> None:
        """Wait for the denied ``part`` of ``shard`` to come free (unless at the bound)."""

    def probe(self, shard: Partition) -> bool:
        """Probe ``shard``; whether a probe started."""

    def take_freed(self) -> list[Woken]:
        """The waits that returned True since last asked, oldest first."""

    def drop_inside(self, shard: Partition) -> None:
        """Forget the waits, and the freed shards, that lie inside ``shard``."""


class BookedWaits(abc.ABC):
    """What :class:`Waits` and the asyncio sweeper's waits share: a :class:`WaitBook` behind a
    lock, a context per wait (a child of the run's), and what is done when a wait begins,
    ends and returns, and around a pause. A subclass runs each wait (:meth:`_launch`, on a
    thread or as a task) and performs its operations."""

    def __init__(self, ctx: Context, max_waits: int, lock: AbstractContextManager[object]) -> None:
        self._ctx = child(ctx)
        self._lock = lock
        self._book = WaitBook(max_waits)
        self._contexts: dict[Wait, Context] = {}
        self._pause: Context | None = None

    def start(self, shard: Partition, level: int, part: Partition) -> None:
        """Wait for the denied ``part`` of ``shard`` to come free (unless at the bound)."""
        with self._lock:
            wait, replaced = self._book.start(shard, level, part)
            self._end(replaced)
            if wait is not None:
                self._begin(wait)

    def probe(self, shard: Partition) -> bool:
        """Look at ``shard`` (level 0) for holders, and follow them if there are any; False,
        starting nothing, at the bound, when a wait on (part of) it is on already, or when
        the run is ending."""
        with self._lock:
            wait = self._book.probe(shard)
            return wait is not None and self._begin(wait)

    def watching(self, shard: Partition) -> bool:
        """Whether a wait on ``shard`` or a part of it is on, or one of them is queued."""
        with self._lock:
            return self._book.watching(shard)

    def take_freed(self) -> list[Woken]:
        """The waits that returned True since last asked, oldest first."""
        with self._lock:
            return self._book.take_freed()

    def drop_inside(self, shard: Partition) -> None:
        """Forget the waits, and the freed shards, that lie inside ``shard``."""
        with self._lock:
            self._end(self._book.drop_inside(shard))

    def _begin(self, wait: Wait) -> bool:
        """Launch ``wait``, unless the run is ending; called with the lock held."""
        if self._ctx.done():
            self._book.ended(wait, freed=False)
            return False
        ctx = self._contexts[wait] = child(self._ctx)
        kind = "probe" if wait.probe else "wait"
        self._launch(wait, ctx, f"lessor-sweep-{kind} {wait.shard}")
        return True

    @abc.abstractmethod
    def _launch(self, wait: Wait, ctx: Context, name: str) -> None:
        """Run ``wait``'s steps (:func:`watch`) with ``ctx`` apart from the run, under
        ``name``; once they return (or fail), call :meth:`_returned` with the lock held."""

    def _end(self, waits: list[Wait]) -> None:
        """End ``waits`` (their contexts); called with the lock held."""
        for wait in waits:
            self._contexts.pop(wait).cancel()

    def _returned(self, wait: Wait, freed: bool) -> None:
        """``wait`` returned ``freed``: a wake-up cuts the pause short. Called with the lock
        held."""
        self._contexts.pop(wait, None)
        if self._book.ended(wait, freed) and self._pause is not None:
            self._pause.cancel()

    def _pause_context(self, seconds: float) -> Context | None:
        """The context a pause of ``seconds`` waits on (a wake-up cancels it); None when a
        shard is queued already: no pause."""
        with self._lock:
            if self._book.woken:
                return None
            self._pause = self._ctx.with_timeout(seconds)
            return self._pause

    def _paused(self) -> None:
        """The pause is over."""
        with self._lock:
            self._pause = None

    def _closing(self) -> None:
        """End every wait, and forget them: the run is over."""
        self._ctx.cancel()
        with self._lock:
            self._book.clear()


class Waits(BookedWaits):
    """The waits of one run, a thread each; see the module documentation."""

    def __init__(self, lessor: Lessor, section_id: str, ctx: Context, *, max_waits: int) -> None:
        super().__init__(ctx, max_waits, threading.Lock())
        self._lessor = lessor
        self._section_id = section_id
        self._threads: set[threading.Thread] = set()

    def _launch(self, wait: Wait, ctx: Context, name: str) -> None:
        thread = threading.Thread(target=self._wait, args=(wait, ctx), name=name, daemon=True)
        self._threads.add(thread)
        thread.start()

    def _wait(self, wait: Wait, ctx: Context) -> None:
        freed = False
        try:
            freed = drive(watch(wait, ctx), self._perform)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())
                self._returned(wait, freed)

    def _perform(self, op: Op) -> object:
        if isinstance(op, IsHeld):
            return self._lessor.is_held(op.ctx, self._section_id, op.part)
        if isinstance(op, WaitFree):
            return self._lessor.wait_free(op.ctx, self._section_id, op.part)
        assert isinstance(op, Sleep), op
        return op.ctx.wait(op.seconds)

    def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less: until the run's context is done or a wait returns True."""
        pause = self._pause_context(seconds)
        if pause is not None:
            try:
                pause.wait()
            finally:
                self._paused()

    def close(self) -> None:
        """End every wait, and give their threads a moment to return."""
        self._closing()
        with self._lock:
            threads = list(self._threads)
        limit = monotonic() + JOIN_SECONDS
        for thread in threads:
            thread.join(max(0.0, limit - monotonic()))
            if thread.is_alive():
                log.warning("%s did not end with its context: a wait_free ignores it", thread.name)


class ProbeCycle:
    """Which shards a run probes next: round the key space's shards in key order from a
    start, leaving out the one being swept, those its last look found empty and those
    already waited on."""

    def __init__(self, shards: SortedPartitions, start: int) -> None:
        self._shards = shards
        self._next = start % len(shards) if len(shards) else 0
        self._empty: set[Partition] = set()

    def seen(self, shard: Partition, scanned: int) -> None:
        """A sweep of the level-0 ``shard`` found ``scanned`` items."""
        if scanned:
            self._empty.discard(shard)
        else:
            self._empty.add(shard)

    def probe(self, waits: WaitControl, count: int, busy: tuple[Partition, ...]) -> int:
        """Start up to ``count`` probes, none overlapping ``busy`` (what this run is
        sweeping); returns how many started. Each shard is considered at most once a call."""
        started = 0
        n = len(self._shards)
        for _ in range(n):
            if started >= count:
                break
            shard = self._shards[self._next]
            self._next = (self._next + 1) % n
            if shard in self._empty or any(shard.overlaps(b) for b in busy):
                continue
            if waits.probe(shard):
                started += 1
        return started
