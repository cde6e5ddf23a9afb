"""One worker process of the benchmark runner (``bench.py``), driven through stdin and stdout.

Each line either way is one JSON object. The runner sends:

* ``{"cmd": "setup", ...}``: build the contenders of a scenario (an ``EtcdLessor``, pyetcd
  ``Lock``s, a pyetcd client for raw puts and, given ``aio_tasks``, an ``AsyncEtcdLessor``'s
  tasks: ``bench_aio.py``) on this process's endpoints, warm each up, tidy, and answer
  ``{"ready": true}``;
* ``{"cmd": "run", "contender": ..., "start": t0, "end": t1}``: from ``t0`` to ``t1`` (both
  :func:`time.monotonic`, which every process of the machine shares) every thread (for
  ``"aio"``, every task) cycles as fast as it can (acquire, an empty callback, release); answer
  with what each did: cycles, errors and the holdings it recorded (for the runner's overlap
  check), and the encoded HDR histograms of acquisition latency in microseconds (one per
  thread; the tasks of the event loop share one); the process's CPU time, and what the
  lessor's observers were told meanwhile (lost swaps; every attempt and every wait at a gate:
  :class:`Breakdown`). Given ``"profile": path``, every thread runs under cProfile
  (``bench_profile.py``) and the answer says where their CPU went;
* ``{"cmd": "tidy"}``: revoke the etcd leases pyetcd's ``Lock`` left behind (it never revokes
  its own; each try grants one), outside the measured window; answer ``{"tidied": n}``;
* ``{"cmd": "teardown"}``: close the scenario's clients; ``{"cmd": "exit"}``: leave.

Sections: ``"own"`` gives each thread ``sections_per_thread`` sections of its own, taken in
turn, and asks for the whole key space every time; ``"shared"`` puts every thread of every
process on one section, each asking for a random range (``"random"``) so that requests
overlap. The ``Lock`` peer takes one lock per section (all threads share one in
``"shared"``); the raw-put peer puts a small value to one key per section. The ``"aio"``
contender's tasks run in the processes given ``aio_tasks`` (the runner gives them to one), on
sections of their own: see ``bench_aio.py``.

    python benchmarks/bench_worker.py    # only ever started by bench.py
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyetcd
from hdrh.histogram import HdrHistogram

from bench_profile import ThreadProfiles
from lessor.etcd import EtcdLessor
from lessor.partition import Partition

if TYPE_CHECKING:
    from bench_aio import AioContender

LOWEST_US, HIGHEST_US, DIGITS = 1, 120_000_000, 3  # HDR histogram range: 1 µs .. 120 s
MAX_ERRORS = 50  # a thread stops after this many failed cycles: it measures nothing more


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


# -- where an acquisition's time goes, as the lessor reports it --------------------------------


class Breakdown:
    """What ``lessor.observe`` tells of this process's acquisitions during one run: lost
    swaps, each attempt (outcome, duration, the pause after it), each wait at a section's gate,
    and the grants; :meth:`take` gives the figures and starts afresh.

    Per section, the attempts of this process follow one another (one leader at a time), so
    the time from one attempt's end to the next one's start is what the process spends
    between attempts (the pause, handing the lead on, an empty gate), and a run of losses is
    the attempts lost in a row before one settles. With a lessor too old to tell attempts,
    only conflicts are counted (without ``lessor.observe``: none at all).
    """

    def __init__(self) -> None:
        self.available = False
        self.attempts_available = False
        self._lock = threading.Lock()
        self._reset()
        try:
            from lessor.observe import Observer, add_observer  # noqa: PLC0415  (newer lessor)
        except ImportError:
            return
        self.available = True
        self.attempts_available = hasattr(Observer, "attempt")
        breakdown = self

        class _Observer(Observer):
            def conflict(self, backend: str, section_id: str) -> None:
                with breakdown._lock:
                    breakdown.conflicts += 1

            def attempt(  # type: ignore[no-untyped-def]
                self, backend, section_id, *, members, outcome, seconds, pause
            ) -> None:
                breakdown._attempt(section_id, members, outcome, seconds, pause)

            def queued(self, backend: str, section_id: str, seconds: float, leads: bool) -> None:
                with breakdown._lock:
                    breakdown.queued_n += 1
                    breakdown.queued_s += seconds
                    breakdown.leads += leads
                    breakdown.queued_hist.record_value(max(1, int(seconds * 1e6)))

            def acquired(self, backend, section_id, asked, granted, seconds) -> None:  # type: ignore[no-untyped-def]
                with breakdown._lock:
                    breakdown.grants += 1

            def freed(self, backend: str, section_id: str, seconds: float, rode: bool) -> None:
                with breakdown._lock:
                    breakdown.freed_n += 1
                    breakdown.rode += rode

            def released(self, backend: str, section_id: str, held_seconds: float) -> None:
                # The benchmark's callbacks are empty: held from the grant until given back is
                # the release's own time, until its ranges are free for every process.
                with breakdown._lock:
                    breakdown.released_hist.record_value(max(1, int(held_seconds * 1e6)))

        add_observer(_Observer())

    def _reset(self) -> None:
        self.conflicts = 0
        self.grants = 0
        self.outcomes: dict[str, int] = {}
        self.outcome_s: dict[str, float] = {}
        self.members = 0
        self.pause_s = 0.0
        self.gap_s = 0.0
        self.gaps = 0
        self.attempt_hist = new_histogram()
        self.queued_hist = new_histogram()
        self.queued_n = 0
        self.queued_s = 0.0
        self.leads = 0
        self.freed_n = 0  # releases that freed their ranges (lessor.observe's freed)
        self.rode = 0  # of which rode a swap of the process's (no etcd write of their own)
        self.released_hist = new_histogram()  # grant to given back (the callbacks are empty)
        self.runs: dict[str, int] = {}  # section -> attempts lost in a row so far
        self.loss_runs: list[int] = []  # each run of losses that ended, by its length
        # The same, counting the attempts deferred to another's turn too (no swap sent).
        self.wait_run: dict[str, int] = {}
        self.wait_runs: list[int] = []
        self.ended: dict[str, float] = {}  # section -> when its last attempt ended
        self.began = time.monotonic()

    def _attempt(
        self, section_id: str, members: int, outcome: str, seconds: float, pause: float
    ) -> None:
        now = time.monotonic()
        with self._lock:
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
            self.outcome_s[outcome] = self.outcome_s.get(outcome, 0.0) + seconds
            self.members += members
            self.pause_s += pause
            self.attempt_hist.record_value(max(1, int(seconds * 1e6)))
            last = self.ended.get(section_id)
            if last is not None:
                self.gap_s += max(0.0, now - seconds - last)
                self.gaps += 1
            self.ended[section_id] = now
            if outcome in ("lost", "stale"):
                self.runs[section_id] = self.runs.get(section_id, 0) + 1
            elif outcome == "settled":
                run = self.runs.pop(section_id, 0)
                if run:
                    self.loss_runs.append(run)
            if outcome in ("lost", "stale", "deferred"):
                self.wait_run[section_id] = self.wait_run.get(section_id, 0) + 1
            elif outcome == "settled":
                run = self.wait_run.pop(section_id, 0)
                if run:
                    self.wait_runs.append(run)

    def take(self) -> dict[str, Any]:
        """What was told since the last call: ``conflicts`` (None without ``lessor.observe``)
        and ``breakdown`` (None without a lessor that tells attempts); starts afresh."""
        with self._lock:
            conflicts = self.conflicts
            wall = time.monotonic() - self.began
            runs = self.loss_runs + [n for n in self.runs.values() if n]
            waits = self.wait_runs + [n for n in self.wait_run.values() if n]
            figures = {
                "wall_s": wall,
                "grants": self.grants,
                "outcomes": dict(self.outcomes),
                "outcome_s": dict(self.outcome_s),
                "members": self.members,
                "pause_s": self.pause_s,
                "gap_s": self.gap_s,
                "gaps": self.gaps,
                "attempt_hist": self.attempt_hist.encode().decode("ascii"),
                "queued_hist": self.queued_hist.encode().decode("ascii"),
                "queued_n": self.queued_n,
                "queued_s": self.queued_s,
                "leads": self.leads,
                "freed_n": self.freed_n,
                "rode": self.rode,
                "released_hist": self.released_hist.encode().decode("ascii"),
                "loss_runs": runs,
                "wait_runs": waits,
            }
            self._reset()
        return {
            "conflicts": conflicts if self.available else None,
            "breakdown": figures if self.attempts_available else None,
        }


# -- one thread's record -----------------------------------------------------------------------


@dataclass
class ThreadRecord:
    thread: int  # global index: worker * threads + local index
    sections: list[str]  # cycled through in turn
    cycles: int = 0
    empty: int = 0  # lessor: grants with no range (everything asked was held by others)
    asked: int = 0  # keys asked for, summed
    granted: int = 0  # keys granted, summed
    tries: int = 0  # Lock: acquisition attempts (each a lease grant and a Txn)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    last: float = 0.0  # when its last cycle finished
    histogram: HdrHistogram = field(default_factory=new_histogram)
    # [section index, start, end, token, low, high, low, high, ...]
    holdings: list[list[Any]] = field(default_factory=list)

    def completed(self, started: float, got: float, now: float, asked: int) -> None:
        """Note a completed cycle: asked at ``started``, held at ``got``, done at ``now``."""
        self.histogram.record_value(max(1, int((got - started) * 1e6)))
        self.cycles += 1
        self.last = now
        self.asked += asked

    def failed(self, e: BaseException) -> bool:
        """Note a failed cycle; whether the thread should stop."""
        self.errors += 1
        if len(self.error_samples) < 3:
            self.error_samples.append(f"{type(e).__name__}: {e}")
            traceback.print_exc(file=sys.stderr)
        return self.errors >= MAX_ERRORS

    def lessor_cycle(
        self, which: int, part: Partition, lease: Any, *, started: float, got: float, until: float
    ) -> float:
        """Note a lessor's cycle on section ``which``, now over: ``part`` asked for at
        ``started``, ``lease`` (a :class:`lessor.Lease`) granted at ``got`` and relied on until
        ``until``. Returns now, when the cycle was noted."""
        now = time.monotonic()
        self.completed(started, got, now, part.high - part.low)
        self.held(which, got, until, lease)
        return now

    def held(self, which: int, got: float, until: float, lease: Any) -> None:
        """Note what a lessor's ``lease`` on section ``which`` granted, relied on from ``got``
        to ``until``: its keys, and its holding for the overlap check (none for an empty
        grant)."""
        ranges = lease.partitions
        if not ranges:
            self.empty += 1
            return
        flat: list[Any] = [which, got, min(until, lease.deadline), lease.token]
        for p in ranges:
            self.granted += p.high - p.low
            flat += (p.low, p.high)
        self.holdings.append(flat)

    def to_json(self) -> dict[str, Any]:
        return {
            "thread": self.thread,
            "sections": self.sections,
            "cycles": self.cycles,
            "empty": self.empty,
            "asked": self.asked,
            "granted": self.granted,
            "tries": self.tries,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "last": self.last,
            "holdings": self.holdings,
        }


Loop = Callable[[ThreadRecord, float], None]  # runs one thread's cycles until ``end``


# -- the scenario ------------------------------------------------------------------------------


class Scenario:
    """A scenario's contenders in this process; see the module documentation."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.worker: int = cfg["worker"]
        self.threads: int = cfg["threads"]
        self.shared: bool = cfg["sections"] == "shared"
        self.per_thread: int = cfg["sections_per_thread"]
        self.all_threads: int = cfg["all_threads"]  # in every process of the scenario
        self.random_ranges: bool = cfg["ranges"] == "random"
        self.universe = Partition(0, cfg["universe"])
        self.dur: float = cfg["dur"]
        self.lock_ttl = math.ceil(cfg["dur"])
        self.name: str = cfg["name"]
        run: str = cfg["run_id"]
        endpoints: list[str] = cfg["endpoints"]  # this process's home member first
        self.lessor = EtcdLessor(
            endpoints,
            prefix=f"/bench/{run}/{self.name}/",
            holder=f"w{self.worker}",
            endpoint_order="given",
        )
        host, port = endpoints[0].rsplit(":", 1)
        self.client = pyetcd.client(host, int(port))
        self.lock_prefix = f"bench-{run}-{self.name}-"
        self.put_prefix = f"/bench-put/{run}/{self.name}/"
        self.rng = random.Random(cfg["seed"] * 1000 + self.worker)
        self.left_leases: list[int] = []  # granted by Lock tries, never revoked by it
        self._left_lock = threading.Lock()
        self.loops: dict[str, Callable[[], Loop]] = {
            "lessor": self.lessor_loop,
            "lock": self.lock_loop,
            "put": self.put_loop,
        }
        self.aio: AioContender | None = None
        self.profile: dict[str, Any] | None = None  # the last run's, when it was profiled
        if cfg.get("aio_tasks"):
            if self.shared or self.random_ranges:
                raise ValueError(f"bench_worker: {self.name} has aio tasks, which run only on "
                                 "sections of their own, asking for whole slots")  # fmt: skip
            from bench_aio import AioContender  # noqa: PLC0415  (needs lessor.aio)

            self.aio = AioContender(
                tasks=cfg["aio_tasks"],
                sections=self.all_threads * self.per_thread,
                universe=self.universe,
                dur=self.dur,
                endpoints=endpoints,
                prefix=f"/bench/{run}/{self.name}-aio/",
                holder=f"w{self.worker}-aio",
                record=ThreadRecord,
                histogram=new_histogram,
            )

    def sections_of(self, thread: int) -> list[str]:
        if self.shared:
            return ["hot"]
        return [f"s{thread + j * self.all_threads}" for j in range(self.per_thread)]

    def part_maker(self) -> Callable[[], Partition]:
        universe = self.universe
        if not self.random_ranges:
            return lambda: universe
        rng = random.Random(self.rng.random())
        size = universe.high

        def random_part() -> Partition:
            width = rng.randint(size // 16, size // 4)
            low = rng.randrange(size - width)
            return Partition(low, low + width)

        return random_part

    # -- contenders ----------------------------------------------------------------------------

    def lessor_loop(self) -> Loop:
        lessor, dur, make_part = self.lessor, self.dur, self.part_maker()

        def loop(rec: ThreadRecord, end: float) -> None:
            sections = rec.sections
            turn = 0
            now = time.monotonic()
            while now < end:
                started = now
                part = make_part()
                which = turn % len(sections)
                turn += 1
                try:
                    with lessor.lease(sections[which], part, dur) as lease:
                        got = time.monotonic()
                        held_until = time.monotonic()  # the callback is empty
                except Exception as e:
                    if rec.failed(e):
                        return
                    now = time.monotonic()
                    continue
                now = rec.lessor_cycle(
                    which, part, lease, started=started, got=got, until=held_until
                )

        return loop

    def lock_loop(self) -> Loop:
        scenario = self

        def loop(rec: ThreadRecord, end: float) -> None:
            locks = [_CountingLock(scenario, self.lock_prefix + s, rec) for s in rec.sections]
            holdings, ttl = rec.holdings, self.lock_ttl
            whole = self.universe.high
            turn = 0
            now = time.monotonic()
            while now < end:
                started = now
                which = turn % len(locks)
                lock = locks[which]
                turn += 1
                try:
                    if not lock.acquire(timeout=end - started):
                        return  # the run ended while it waited
                    got = time.monotonic()
                    held_until = time.monotonic()  # the callback is empty
                    if not lock.release():
                        raise RuntimeError(f"pyetcd Lock {lock.name!r} was not held at release")
                except Exception as e:
                    if rec.failed(e):
                        return
                    now = time.monotonic()
                    continue
                now = time.monotonic()
                rec.completed(started, got, now, whole)
                rec.granted += whole
                # Its lease was granted after ``started``: it lives at least until then + ttl.
                holdings.append(
                    [which, got, min(held_until, started + ttl), lock.revision, 0, whole]
                )

        return loop

    def put_loop(self) -> Loop:
        client = self.client

        def loop(rec: ThreadRecord, end: float) -> None:
            keys = [self.put_prefix + s for s in rec.sections]
            value = b"x" * 64
            turn = 0
            now = time.monotonic()
            while now < end:
                started = now
                key = keys[turn % len(keys)]
                turn += 1
                try:
                    client.put(key, value)
                except Exception as e:
                    if rec.failed(e):
                        return
                    now = time.monotonic()
                    continue
                now = time.monotonic()
                rec.completed(started, now, now, 0)  # a put asks for no keys

        return loop

    # -- running -------------------------------------------------------------------------------

    def run(
        self, contender: str, start: float, end: float, *, profile: str | None = None
    ) -> list[ThreadRecord]:
        """Every thread (for ``"aio"``, every task) runs ``contender`` from ``start`` to
        ``end``. Given ``profile`` (a file's path), every thread runs under cProfile on its
        own CPU time, and :attr:`profile` says where that time went (``bench_profile.py``)."""
        self.profile = None
        if contender == "aio":
            return self.aio.run(start, end) if self.aio is not None else []
        first = self.worker * self.threads
        records = [ThreadRecord(t, self.sections_of(t)) for t in range(first, first + self.threads)]
        loops = [self.loops[contender]() for _ in records]
        profiles = ThreadProfiles() if profile else None
        if profiles is not None:
            loops = [profiles.wrap(lp) for lp in loops]

        def thread(rec: ThreadRecord, loop: Loop) -> None:
            wait = start - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # every process starts at the runner's instant, not an event
            rec.last = start
            try:
                loop(rec, end)
            except BaseException as e:
                rec.failed(e)

        threads = [
            threading.Thread(target=thread, args=(r, lp))
            for r, lp in zip(records, loops, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if profiles is not None and profile:
            self.profile = profiles.summary(Path(profile), cycles=sum(r.cycles for r in records))
        return records

    def tidy(self) -> int:
        """Revoke what Lock left behind; the number of leases revoked."""
        with self._left_lock:
            leases, self.left_leases = self.left_leases, []

        def revoke(lease: int) -> None:
            with contextlib.suppress(Exception):  # already expired: nothing to do
                self.client.revoke_lease(lease)

        with ThreadPoolExecutor(8) as pool:  # thousands after a contended round
            list(pool.map(revoke, leases))
        return len(leases)

    def close(self) -> None:
        self.tidy()
        if self.aio is not None:
            self.aio.close()
        self.lessor.close()
        self.client.close()


class _CountingLock(pyetcd.Lock):  # type: ignore[misc]
    """pyetcd's Lock, counting its tries."""

    def __init__(self, scenario: Scenario, name: str, rec: ThreadRecord) -> None:
        super().__init__(name, ttl=scenario.lock_ttl, etcd_client=_LeaseRecorder(scenario))
        self._rec = rec

    def _try_acquire(self) -> bool:
        self._rec.tries += 1
        ok: bool = super()._try_acquire()
        return ok


class _LeaseRecorder:
    """The scenario's pyetcd client, remembering every lease granted through it: each of
    Lock's tries grants one, and Lock never revokes them (it forgets those of failed tries)."""

    def __init__(self, scenario: Scenario) -> None:
        self._scenario = scenario
        self._client = scenario.client

    def lease(self, ttl: int) -> Any:
        lease = self._client.lease(ttl)
        with self._scenario._left_lock:
            self._scenario.left_leases.append(lease.id)
        return lease

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def main() -> None:
    told = Breakdown()
    scenario: Scenario | None = None

    def answer(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
        sys.stdout.flush()

    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg["cmd"]
        if cmd == "setup":
            scenario = Scenario(msg)
            for contender in msg["contenders"]:
                now = time.monotonic()
                scenario.run(contender, now, now + msg["warmup"])
            answer({"ready": True, "tidied": scenario.tidy()})
        elif cmd == "run":
            assert scenario is not None
            told.take()  # afresh: what the warm-up or the last tidy-up told is not this run's
            cpu = time.process_time()
            records = scenario.run(
                msg["contender"], msg["start"], msg["end"], profile=msg.get("profile")
            )
            cpu = time.process_time() - cpu
            answer(
                {
                    "worker": scenario.worker,
                    "cpu": cpu,
                    **told.take(),
                    "profile": scenario.profile,
                    "threads": [r.to_json() for r in records],
                    "histograms": [
                        h.encode().decode("ascii")
                        for h in {id(r.histogram): r.histogram for r in records}.values()
                    ],
                }
            )
        elif cmd == "tidy":
            assert scenario is not None
            answer({"tidied": scenario.tidy()})
        elif cmd == "teardown":
            if scenario is not None:
                scenario.close()
                scenario = None
            answer({"closed": True})
        elif cmd == "exit":
            break
        else:
            raise ValueError(f"bench_worker: unknown command {cmd!r}")
    if scenario is not None:
        scenario.close()


if __name__ == "__main__":
    main()
