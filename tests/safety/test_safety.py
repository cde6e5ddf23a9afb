"""The safety suite: workers lease through a three-member cluster while a nemesis breaks it.

Worker processes (worker.py) lease random overlapping ranges of a few sections for
:data:`SECONDS` while the nemesis injects, one at a time and at random: leader kill and
restart, member pause, member isolation, a client process paused past its lease deadline,
and a graceful etcd member restart. Every acquisition is recorded on the one monotonic clock
of the machine. An independent checker (lessor.testing.history) then proves:

* no two holders held a common key of one section while both were before their deadlines;
* tokens of one section order the leases that share a key (a paused worker's stale token is
  lower than its successor's, so a fenced store rejects it);
* after each fault heals, every worker acquires again; the longest time without any
  successful acquisition is reported.

Run with ``nox -s safety`` (``LESSOR_SAFETY_SECONDS`` changes the length). It prints one
summary line.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lessor import Context
from lessor.testing import find_overlaps, find_token_inversions
from lessor.testing.child import Children
from tests.support.programs import ROOT, python_module, ready_set_go
from tests.support.record import holding_of, read_records

pytestmark = pytest.mark.safety

SECONDS = float(os.environ.get("LESSOR_SAFETY_SECONDS", "60"))
WORKERS = 4
THREADS = 2
SECTIONS = ["alpha", "beta", "gamma"]
DUR = 1.5  # lease duration asked for
RECOVERY = 10.0  # every worker must acquire again within this long after a fault heals
WORKER = Path(__file__).with_name("worker.py")


@dataclass
class Fault:
    kind: str
    target: str
    began: float
    healed: float


class Workers(Children):
    """The worker processes; killed by pid at :meth:`close`, whatever happens."""

    def __init__(self, tmp: Path, endpoints: list[str], prefix: str, seed: int) -> None:
        super().__init__()
        self.outs = [tmp / f"worker-{w}.jsonl" for w in range(WORKERS)]
        try:
            for w in range(WORKERS):
                self._start(w, tmp, endpoints, prefix, seed)
        except BaseException:
            self.close()
            raise

    def _start(self, w: int, tmp: Path, endpoints: list[str], prefix: str, seed: int) -> None:
        cfg = {
            "endpoints": endpoints, "prefix": prefix, "worker": w, "threads": THREADS,
            "sections": SECTIONS, "universe": 256, "dur": DUR, "hold": 0.05,
            "acquire_within": 5.0, "rpc_timeout": 1.0, "seconds": SECONDS,
            "seed": seed, "out": str(self.outs[w]),
        }  # fmt: skip
        self.start(f"worker {w}", python_module(WORKER, json.dumps(cfg)),
                   log=tmp / f"worker-{w}.err", cwd=ROOT)  # fmt: skip

    def close(self) -> None:
        for child in self:
            child.signal(signal.SIGCONT)  # a paused worker dies at once when killed
        super().close()

    def records(self) -> list[dict[str, Any]]:
        return [r for path in self.outs for r in read_records(path)]


@pytest.fixture
def cluster() -> Iterator[Any]:
    from lessor.testing import LocalEtcdCluster  # noqa: PLC0415

    with LocalEtcdCluster(size=3) as c:
        yield c


def nemesis(cluster: Any, workers: Workers, until: float, rng: random.Random) -> list[Fault]:
    """Inject faults one at a time until ``until``; each lasts a few seconds, then heals."""
    faults: list[Fault] = []
    pause = Context.background()
    while time.monotonic() + 6 < until:
        pause.wait(rng.uniform(1.0, 3.0))  # calm between faults: workers make progress
        kind = rng.choice(["leader kill", "member pause", "member isolation", "client pause",
                           "member restart"])  # fmt: skip
        began = time.monotonic()
        if kind == "client pause":
            victim = rng.randrange(WORKERS)
            workers[victim].signal(signal.SIGSTOP)
            pause.wait(DUR + rng.uniform(0.5, 2.0))  # past the deadline of what it holds
            workers[victim].signal(signal.SIGCONT)
            target = f"worker {victim}"
        else:
            i = cluster.leader() if kind == "leader kill" else rng.randrange(3)
            target = f"member {i}"
            if kind == "leader kill":
                cluster.kill(i)
                pause.wait(rng.uniform(1.0, 3.0))
                cluster.restart(i)
            elif kind == "member pause":
                cluster.pause(i)
                pause.wait(rng.uniform(1.0, 3.0))
                cluster.resume(i)
            elif kind == "member isolation":
                cluster.isolate(i)
                pause.wait(rng.uniform(1.0, 3.0))
                cluster.heal(i)
            else:
                cluster.stop(i)
                cluster.restart(i)
        faults.append(Fault(kind, target, began, time.monotonic()))
    return faults


def test_no_overlap_under_faults(cluster: Any, tmp_path: Path) -> None:
    seed = int(os.environ.get("LESSOR_SAFETY_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    prefix = f"/safety-{uuid.uuid4().hex[:8]}/"
    with Workers(tmp_path, cluster.endpoints, prefix, seed) as workers:
        ready_set_go(workers.started, timeout=60)
        began = time.monotonic()
        faults = nemesis(cluster, workers, began + SECONDS, rng)
        statuses = [child.wait(timeout=SECONDS + 60) for child in workers]
        ended = time.monotonic()
    records = workers.records()

    granted = [r for r in records if "error" not in r]
    holdings = [holding_of(r) for r in granted]
    overlaps = find_overlaps(holdings)
    inversions = find_token_inversions(holdings)
    successes = sorted(r["answered"] for r in granted)
    gaps = [b - a for a, b in zip([began, *successes], [*successes, ended], strict=True)]
    longest = max(gaps)
    unrecovered = []
    for fault in faults:
        for w in range(WORKERS):
            after = [r["answered"] for r in granted
                     if r["worker"] == w and r["answered"] >= fault.healed]  # fmt: skip
            if fault.healed + RECOVERY < ended and (not after or min(after) > fault.healed
                                                     + RECOVERY):  # fmt: skip
                unrecovered.append(f"worker {w} after {fault.kind} of {fault.target}")
    kinds = ", ".join(f"{n} {k}" for k, n in Counter(f.kind for f in faults).items())
    errors = Counter(r["error"].split(":")[0] for r in records if "error" in r)
    print(
        f"\nsafety: {len(faults)} faults injected ({kinds}), "
        f"{len(granted)} acquisitions ({sum(1 for h in holdings if h.ranges)} with ranges), "
        f"overlaps {len(overlaps)}, token inversions {len(inversions)}, "
        f"longest unavailability {longest:.2f}s; seed {seed}, {ended - began:.0f}s, "
        f"failed attempts {dict(errors)}"
    )
    problems = []
    if overlaps:
        problems.append("overlaps:\n" + "\n".join(map(str, overlaps[:5])))
    if inversions:
        problems.append(f"token inversions: {inversions[:3]}")
    if unrecovered:
        problems.append(f"no progress within {RECOVERY}s of a heal: {unrecovered}")
    if any(s != 0 for s in statuses):
        problems.append(f"worker exit statuses {statuses}; see {tmp_path}/worker-*.err")
    if not faults:
        problems.append("the nemesis injected no fault")
    assert not problems, "\n".join(problems)
