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
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from time import monotonic

from lessor.context import Context
from lessor.contract import Lessor
from lessor.partition import Partition, SortedPartitions

__all__ = ["GRACE", "ProbeCycle", "Waits", "Woken", "observes"]

log = logging.getLogger("lessor.sweep")

GRACE = 0.2
"""Seconds a probe gives a holder that gave back to take its next lease in the same shard
(a sweeper moving on to the next part of it) before it looks again."""

_WAIT_KEY = object()  # a key only to make a child context: nothing reads it
_JOIN_SECONDS = 5.0  # how long closing waits for the threads whose contexts it ended


def observes(lessor: Lessor) -> bool:
    """Whether ``lessor`` observes its holders, so that it can answer a probe: its backend
    overrides both :meth:`~lessor.contract.Lessor._wait_free` and
    :meth:`~lessor.contract.Lessor._is_held`."""
    kind = type(lessor)
    return kind._wait_free is not Lessor._wait_free and kind._is_held is not Lessor._is_held


@dataclass(frozen=True, slots=True)
class Woken:
    """A wait that returned True: sweep ``shard`` (at ``level``) again; ``part`` is what
    was waited on (the denied span, or the whole shard for a probe)."""

    shard: Partition
    level: int
    part: Partition


@dataclass(frozen=True, slots=True, eq=False)
class _Wait:
    shard: Partition
    level: int
    part: Partition
    ctx: Context
    probe: bool


def _inside(outer: Partition, p: Partition) -> bool:
    return outer.low <= p.low and p.high <= outer.high


class Waits:
    """The waits of one run, a thread each; see the module documentation."""

    def __init__(self, lessor: Lessor, section_id: str, ctx: Context, *, max_waits: int) -> None:
        self._lessor = lessor
        self._section_id = section_id
        self._max = max_waits
        self._ctx = ctx.with_value(_WAIT_KEY, None)
        self._lock = threading.Lock()
        self._waiting: dict[Partition, _Wait] = {}  # by shard; insertion order: oldest first
        self._freed: deque[Woken] = deque()
        self._threads: set[threading.Thread] = set()
        self._pause: Context | None = None

    def start(self, shard: Partition, level: int, part: Partition) -> None:
        """Wait for the denied ``part`` of ``shard`` to come free (unless at the bound)."""
        with self._lock:
            old = self._waiting.pop(shard, None)
            if old is not None:
                old.ctx.cancel()  # the newer sweep's denial replaces it
            if len(self._waiting) >= self._max:
                probe = next((w for w in self._waiting.values() if w.probe), None)
                if probe is None:
                    return
                self._waiting.pop(probe.shard).ctx.cancel()
            self._begin(_Wait(shard, level, part, self._child(), False))

    def probe(self, shard: Partition) -> bool:
        """Look at ``shard`` (level 0) for holders, and follow them if there are any; False,
        starting nothing, at the bound, when a wait on (part of) it is on already, or when
        the run is ending."""
        with self._lock:
            if len(self._waiting) >= self._max or self._watching(shard):
                return False
            return self._begin(_Wait(shard, 0, shard, self._child(), True))

    def watching(self, shard: Partition) -> bool:
        """Whether a wait on ``shard`` or a part of it is on, or one of them is queued."""
        with self._lock:
            return self._watching(shard)

    def _watching(self, shard: Partition) -> bool:
        return any(_inside(shard, p) for p in self._waiting) or any(
            _inside(shard, f.shard) for f in self._freed
        )

    def _child(self) -> Context:
        return self._ctx.with_value(_WAIT_KEY, None)

    def _begin(self, wait: _Wait) -> bool:
        """Start ``wait``'s thread, unless the run is ending; called with the lock held."""
        if self._ctx.done():
            return False
        self._waiting[wait.shard] = wait
        kind = "probe" if wait.probe else "wait"
        thread = threading.Thread(
            target=self._wait, args=(wait,), name=f"lessor-sweep-{kind} {wait.shard}", daemon=True
        )
        self._threads.add(thread)
        thread.start()
        return True

    def _wait(self, wait: _Wait) -> None:
        freed = False
        try:
            if wait.probe:
                freed = self._follow(wait)
            else:
                freed = self._lessor.wait_free(wait.ctx, self._section_id, wait.part)
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
                    if freed and all(f.shard != wait.shard for f in self._freed):
                        self._freed.append(Woken(wait.shard, wait.level, wait.part))
                        if self._pause is not None:
                            self._pause.cancel()

    def _follow(self, wait: _Wait) -> bool:
        """A probe: follow the holders of ``wait.shard`` until none is left (True), or until
        its context ends (False, or the context's error from ``is_held``); False after one
        look when nothing of it was held."""
        followed = False
        while True:
            if not self._lessor.is_held(wait.ctx, self._section_id, wait.part):
                return followed  # nothing held now: every holder we saw is gone
            if not self._lessor.wait_free(wait.ctx, self._section_id, wait.part):
                return False
            followed = True  # a holder gave back or expired; a live one goes on within GRACE
            if wait.ctx.wait(GRACE):
                return False

    def take_freed(self) -> list[Woken]:
        """The waits that returned True since last asked, oldest first."""
        with self._lock:
            taken = list(self._freed)
            self._freed.clear()
        return taken

    def drop_inside(self, shard: Partition) -> None:
        """Forget the waits, and the freed shards, that lie inside ``shard``."""
        with self._lock:
            for inner in [p for p in self._waiting if _inside(shard, p)]:
                self._waiting.pop(inner).ctx.cancel()
            self._freed = deque(f for f in self._freed if not _inside(shard, f.shard))

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
        limit = monotonic() + _JOIN_SECONDS
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

    def probe(self, waits: Waits, count: int, busy: tuple[Partition, ...]) -> int:
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
