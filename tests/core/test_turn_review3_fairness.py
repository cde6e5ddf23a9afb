"""Turn review 3 (holds): fairness and safety with group commit, riding releases and faults,
one process much farther from etcd than the others.

Explored with ``tests/support/sim.py`` (per-process round trips on the model's clock), with
several threads per process (each acquisition through ``core.acquire``, so queued ones wait
at the gate and one leads for all), releases that ride the next Txn (``Boarding``), and calls
lost or dropped at random. Four processes 1 ms from
etcd with three threads each, one 40 ms away with two, every thread in a closed loop on one
key out of 50 of one section; checked at every call a thread sends: no two live entries
overlap.

What held (seeds 1 to 9, 0 to 8 % faults, horizons up to 2 s): no acquisition failed; every
process won; the far process's longest acquisition stayed under 1 s (its swaps take 40 ms; a
claim of a near process is respected for its patience, ``8 * 40 ms``), where on main it
would lose nearly every swap.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import pytest

from lessor import Partition
from lessor.etcd import core
from lessor.etcd.core.release import Boarding
from lessor.etcd.gate import Waiter
from lessor.etcd.ops import Op, Wait
from lessor.etcd.retry import Backoff
from lessor.etcd.turn import MAX_PATIENCE
from tests.support.driver import Proc, live_entries
from tests.support.etcd_model import EtcdModel, FakeClock
from tests.support.sim import Sim

NEAR, FAR = 0.001, 0.040
KEYS = 50


def _thread(p: Proc, stats: dict[str, Any], rng: random.Random) -> Iterator[Op]:
    """One thread of ``p``: acquire a key, release it riding the gate, again and again."""
    sec = p.section("s")
    while True:
        k = rng.randrange(KEYS)
        m = p.member(Partition(k, k + 1), 1.0)
        m.backoff = Backoff(random.Random(rng.random()))
        w = Waiter(m, lambda: None)
        began = p.clock()
        try:
            grant = yield from core.acquire(sec.known, sec.gate, w, leads=sec.gate.join(w),
                                            turn=None, config=p.config)  # fmt: skip
        except Exception as e:
            stats["errors"].append(repr(e))
            continue
        stats["longest"] = max(stats["longest"], p.clock() - began)
        stats["wins"] += bool(grant.partitions)
        if grant.handle is not None:
            boarding = Boarding(sec.gate, None, lambda: None, lambda: None)
            # a release whose deletions all failed raises: its marker ends at its TTL
            with contextlib.suppress(Exception):
                yield from core.release(grant.handle, p.config, boarding)
        yield Wait(rng.random() * 0.002, None)


@pytest.mark.parametrize(("seed", "faults"), [(4, 0.0), (6, 0.05)])
def test_a_far_process_wins_beside_near_ones_with_rides_and_faults(
    seed: int, faults: float
) -> None:
    clock = FakeClock()
    etcd = EtcdModel(clock)
    sim = Sim(clock, etcd)
    overlaps: list[str] = []
    checked: list[Op] = []
    everyone: list[dict[str, Any]] = []
    for j, (rtt, threads) in enumerate([(NEAR, 3)] * 4 + [(FAR, 2)]):
        p = Proc(f"p{j}", etcd, clock)
        stats: dict[str, Any] = {"wins": 0, "errors": [], "longest": 0.0}
        everyone.append(stats)
        calls = random.Random(seed * 100 + j)

        def fault(op: Op, calls: random.Random = calls) -> str:
            if calls.random() < faults:
                return calls.choice(["lost", "dropped"])
            return "ok"

        def check(op: Op) -> None:
            checked.append(op)
            entries = live_entries(etcd, "s")
            for i, a in enumerate(entries):
                for b in entries[i + 1 :]:
                    if any(x.overlaps(y) for x in a.ranges for y in b.ranges):
                        overlaps.append(f"{a} and {b}")

        for t in range(threads):
            sim.start(p, "s", _thread(p, stats, random.Random(seed * 7 + j * 31 + t)), rtt,
                      check, fault)  # fmt: skip
    end = clock() + 1.2
    sim.run(until=lambda: clock() >= end or bool(overlaps))
    assert checked and not overlaps
    assert all(not s["errors"] for s in everyone), [s["errors"] for s in everyone]
    # every process wins: the far one 2 to 6 times in 1.2 s over seeds 1-12 (at least 2 each;
    # on main, none), the near ones about 270
    assert all(s["wins"] >= 2 for s in everyone), [s["wins"] for s in everyone]
    assert everyone[-1]["longest"] < 2 * MAX_PATIENCE, everyone[-1]
