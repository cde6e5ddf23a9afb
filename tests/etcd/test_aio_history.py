"""A history check in one event loop (issue 13): 200 tasks and two other processes lease
overlapping ranges through a three-member cluster while a member, then the leader, is killed.

* The test's own event loop runs :data:`TASKS` tasks of one :class:`~lessor.etcd.AsyncEtcdLessor`
  (:class:`tests.support.record.AsyncRecordLoop`);
* one worker process runs :data:`THREADS` threads of one :class:`~lessor.etcd.EtcdLessor`, and
  another :data:`CHILD_TASKS` tasks of one ``AsyncEtcdLessor`` (``tests/safety/worker.py``).

All of them lease random ranges of :data:`SECTIONS` (of one key space, so they overlap) of one
:class:`~lessor.testing.LocalEtcdCluster`, and write down every attempt: each holding with its
holder, section, ranges, start, end (the earlier of its release and its deadline) and token,
on the one monotonic clock of the machine. Meanwhile a follower is killed and restarted, then
the leader is killed and restarted.

The run is paced by progress, not by the clock: each of its five phases (before the faults, a
follower down, between the faults, the leader down, after the faults) lasts until each of the
three processes has been granted :data:`PROGRESS` holdings with ranges in it (at most
:data:`PHASE_BOUND` seconds). Then the merged history must show no overlap and no token
inversion (:mod:`lessor.testing.history`), and the counts of each phase are checked again from
the records. The cluster and the processes are ended whatever happens (the ``cluster``
fixture, :class:`~lessor.testing.child.Children`).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from lessor import LessorError
from lessor.etcd import AsyncEtcdLessor
from lessor.testing import LocalEtcdCluster, find_overlaps, find_token_inversions
from lessor.testing.child import Child, Children
from tests.support.programs import ROOT, python_module, ready_set_go
from tests.support.record import AsyncRecordLoop, Workload, holding_of, read_records

WORKER = ROOT / "tests" / "safety" / "worker.py"
TASKS = 200  # in the test's event loop: worker 0
THREADS = 4  # of the threaded worker process: worker 1
CHILD_TASKS = 20  # of the asyncio worker process: worker 2
SECTIONS = ["red", "green", "blue"]
UNIVERSE = 256
DUR = 1.5
HOLD = 0.02
ACQUIRE_WITHIN = 5.0
RPC_TIMEOUT = 1.0
PROGRESS = {0: 100, 1: 30, 2: 30}  # holdings with ranges each process gets in each phase
PHASE_BOUND = 20.0  # seconds a phase may take to see that progress
LONGEST = 120.0  # the workers' own limit; the test stops them when its phases are done


@dataclass(frozen=True)
class Phase:
    name: str
    began: float
    ended: float


class Progress:
    """The holdings with ranges each worker was granted so far, as its record file tells
    (read as it grows; a line being written is left for the next read)."""

    def __init__(self, outs: dict[int, Path], children: Sequence[Child]) -> None:
        self._outs = outs
        self._children = children
        self._read = dict.fromkeys(outs, 0)
        self.starts: dict[int, list[float]] = {w: [] for w in outs}

    def _update(self) -> None:
        for w, path in self._outs.items():
            if not path.exists():
                continue
            with path.open("rb") as f:
                f.seek(self._read[w])
                text = f.read()
            complete = text[: text.rfind(b"\n") + 1]
            self._read[w] += len(complete)
            for line in complete.splitlines():
                record = json.loads(line)
                if "error" not in record and record["ranges"]:
                    self.starts[w].append(record["start"])

    def since(self, began: float) -> dict[int, int]:
        """Holdings with ranges per worker that started at ``began`` or later."""
        return {w: sum(t >= began for t in ts) for w, ts in self.starts.items()}

    async def phase(self, name: str, began: float) -> None:
        """Return once every worker got its :data:`PROGRESS` since ``began``; fail after
        :data:`PHASE_BOUND` seconds, or as soon as a worker process has exited."""
        deadline = time.monotonic() + PHASE_BOUND
        while True:
            self._update()
            counts = self.since(began)
            if all(counts[w] >= PROGRESS[w] for w in counts):
                return
            for child in self._children:
                assert child.running, f"{child.name} exited {name}:\n{child.log_tail()}"
            assert time.monotonic() < deadline, (
                f"{name}: holdings with ranges per worker {counts} in {PHASE_BOUND}s, "
                f"need {PROGRESS}"
            )
            await asyncio.sleep(0.05)  # the files fill on their own: look again shortly


async def faults(cluster: LocalEtcdCluster, progress: Progress) -> list[Phase]:
    """Kill and restart a follower, then the leader, each once every worker has progressed in
    the phase before; the phases, in order."""
    calm_phases = iter(["before the faults", "between the faults", "after the faults"])
    phases: list[Phase] = []
    calm, began = next(calm_phases), time.monotonic()
    await progress.phase(calm, began)
    for kind in ("a follower", "the leader"):
        leader = await asyncio.to_thread(cluster.leader)
        victim = leader if kind == "the leader" else (leader + 1) % 3
        killed = time.monotonic()
        await asyncio.to_thread(cluster.kill, victim)
        phases.append(Phase(calm, began, killed))
        down = f"with {kind} down"
        await progress.phase(down, killed)
        await asyncio.to_thread(cluster.restart, victim)  # returns once it is healthy again
        began = time.monotonic()
        phases.append(Phase(down, killed, began))
        calm = next(calm_phases)
        await progress.phase(calm, began)
    phases.append(Phase(calm, began, time.monotonic()))
    return phases


def _expected(error: str) -> bool:
    """Whether a recorded error is one a fault may cause: a :class:`~lessor.LessorError`."""
    kinds, names = [LessorError], set()
    while kinds:
        kind = kinds.pop()
        names.add(kind.__name__)
        kinds += kind.__subclasses__()
    return error.split(":", maxsplit=1)[0] in names


@pytest.fixture
def cluster() -> Iterator[LocalEtcdCluster]:
    with LocalEtcdCluster() as c:
        yield c


def test_200_tasks_and_two_processes_never_overlap_through_member_and_leader_kills(
    cluster: LocalEtcdCluster, tmp_path: Path
) -> None:
    seed = int(os.environ.get("LESSOR_AIO_HISTORY_SEED", random.randrange(2**32)))
    prefix = f"/aio-history-{uuid.uuid4().hex[:8]}/"
    outs = {w: tmp_path / f"worker-{w}.jsonl" for w in range(3)}

    def workload(w: int) -> Workload:
        return Workload(outs[w], w, LONGEST, seed, SECTIONS, UNIVERSE, DUR, HOLD,
                        acquire_within=ACQUIRE_WITHIN, expected=(LessorError,))  # fmt: skip

    async def here(children: Sequence[Child]) -> tuple[list[Phase], list[str]]:
        stop = threading.Event()
        async with AsyncEtcdLessor(cluster.endpoints, prefix=prefix,
                                   rpc_timeout=RPC_TIMEOUT) as lessor:  # fmt: skip
            run = asyncio.create_task(AsyncRecordLoop(lessor, workload(0), TASKS).run(stop))
            try:
                phases = await faults(cluster, Progress(outs, children))
            finally:
                stop.set()  # each task ends after its attempt under way
                _, failures = await run
        return phases, failures

    with Children() as children:
        for w, lanes in ((1, {"threads": THREADS}), (2, {"tasks": CHILD_TASKS})):
            cfg = {"endpoints": cluster.endpoints, "prefix": prefix, "worker": w,
                   "sections": SECTIONS, "universe": UNIVERSE, "dur": DUR, "hold": HOLD,
                   "acquire_within": ACQUIRE_WITHIN, "rpc_timeout": RPC_TIMEOUT,
                   "seconds": LONGEST, "seed": seed, "out": str(outs[w])} | lanes  # fmt: skip
            children.start(f"worker {w}", python_module(WORKER, json.dumps(cfg)),
                           log=tmp_path / f"worker-{w}.err", cwd=ROOT)  # fmt: skip
        began = ready_set_go(children.started)
        phases, failures = asyncio.run(here(children.started))
        for child in children:
            child.send("stop")
        for child in children:
            assert child.wait(timeout=30) == 0, child.log_tail()
            assert child.expect(5) == "done", child.log_tail()
        ended = time.monotonic()

    records = [r for path in outs.values() for r in read_records(path)]
    holdings = [holding_of(r) for r in records if "error" not in r]
    overlaps = find_overlaps(holdings)
    inversions = find_token_inversions(holdings)
    counts = {p.name: Counter(h.holder.split(".")[0] for h in holdings
                              if h.ranges and p.began <= h.start < p.ended)
              for p in phases}  # fmt: skip
    errors = Counter(r["error"].split(":")[0] for r in records if "error" in r)
    lines = [f"  {p.name} ({p.ended - p.began:.2f}s): {dict(counts[p.name])}" for p in phases]
    print(
        f"\naio history: seed {seed}, {ended - began:.1f}s, {len(records)} attempts "
        f"({sum(1 for h in holdings if h.ranges)} holdings with ranges), overlaps "
        f"{len(overlaps)}, token inversions {len(inversions)}, failed attempts {dict(errors)}\n"
        + "\n".join(lines)
    )
    assert not failures, "\n".join(failures[:3])
    unexpected = [r for r in records if "error" in r and not _expected(r["error"])]
    assert not unexpected, unexpected[:3]
    assert not overlaps, "\n".join(map(str, overlaps[:5]))
    assert not inversions, inversions[:3]
    for p in phases:
        short = {w: counts[p.name][f"w{w}"] for w in PROGRESS
                 if counts[p.name][f"w{w}"] < PROGRESS[w]}  # fmt: skip
        assert not short, f"{p.name}: too few holdings with ranges {short}, need {PROGRESS}"
