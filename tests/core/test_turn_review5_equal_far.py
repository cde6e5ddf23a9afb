"""Turn review 5: a group of processes all equally far from etcd (another datacenter, 30 ms
each way and back) with ordinary short acquisitions gets a quarter fewer grants with the turn
than without it, and about twice as many acquisitions fail on their deadline.

Kept as the turn's measured price where nobody is nearer than the others (``turn.py``,
"Cost"; README): the test holds the lessor to it (at least 60 grants, at most 24 failures,
against main's 84-85 and 6-12), so that a change that makes it worse fails here (an attempt
to let every claim stand for its holder's round trip first gave 56 and 60 grants, 41 and 39
failures). The fix the review proposes first, learning of a claim's end sooner than a pause
and a read (a watch on the turn key), is not built.

Schedule (the simulator, ``tests/support/sim.py``): eight processes, each 30 ms from etcd,
one thread each, acquire one key of their own out of 400 (no overlap between processes
matters: every swap compares the one section key) and release it, in a closed loop, every
acquisition with a 0.25 s deadline; 3 s of model time.

What happens with the turn (139620b): after every win, the others, deferring to the claim
that win ended, learn of it only at their next read: a pause of one attempt (30 ms) and a
read (30 ms) after the win, where without the turn a loser's swap already in flight lands
within half a round trip. And for a process 30 ms away the "no time left to defer" window is
``MIN_CALL_TIME + pause + 2 * attempt`` = 140 ms of its 250 ms: a deferring acquisition takes
a claim over after at most ~110 ms, and those whose windows open together take the same claim
over at once (traced: five processes took over p4's claim within 2 ms, 15 to 17 ms after it
was made, before its holder's swap could land; each built on the same state, one at most
wins). Measured over seeds 0 and 1: grants 67 and 67 with the turn, 85 and 84 on main;
acquisitions failed 16 and 17 with the turn, 6 and 12 on main (053319d, before 139620b: 58
and 48 grants, 43 and 37 failed). With a 0.4 s deadline: 64 and 64 grants against 86 and 85.

What it shows: where nobody is nearer than the others (the turn exists for a process that
loses to nearer ones), the turn costs throughput. With 80 grants asked for, it passes on
main (no turn): ``PYTHONPATH=<main>/src:. python -m pytest`` this file.

Fix ideas: a deferring process learns of the end of the claim sooner than a pause and a read
(watch the turn key, or pause half an attempt while the claim's holder's swap is due); a
"no time left" takeover only of a claim that has stood for its holder's round trip
(``turn.attempt``) since it was first seen, and never by more than one of the takers' reads
of the same state (or: no claim while every contender's round trip is alike, within a
factor, i.e. there is nobody nearer to be fair against).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from lessor import Partition
from lessor.etcd import core
from lessor.etcd.gate import Waiter
from lessor.etcd.ops import Op
from lessor.etcd.retry import Backoff
from tests.support.driver import Proc
from tests.support.etcd_model import EtcdModel, FakeClock
from tests.support.sim import Sim

ROUND_TRIP = 0.030
PROCESSES = 8
DEADLINE = 0.25
KEYS = 400
HORIZON = 3.0


def _loop(p: Proc, stats: dict[str, int], rng: random.Random) -> Iterator[Op]:
    """One thread of ``p``: acquire a key, release it, again and again."""
    sec = p.section("s")
    while True:
        k = rng.randrange(KEYS)
        m = p.member(Partition(k, k + 1), DEADLINE)
        m.backoff = Backoff(random.Random(rng.random()))
        w = Waiter(m, lambda: None)
        try:
            grant = yield from core.acquire(sec.known, sec.gate, w, leads=sec.gate.join(w),
                                            turn=None, config=p.config)  # fmt: skip
        except Exception:
            stats["failed"] += 1
            continue
        stats["granted"] += bool(grant.partitions)
        if grant.handle is not None:
            yield from core.release(grant.handle, p.config)


@pytest.mark.parametrize("seed", [0, 1])
def test_an_equally_far_group_keeps_three_quarters_of_its_grants(seed: int) -> None:
    """Schedule in the module docstring. On main: 84 to 85 grants, 6 to 12 failed; with the
    turn (119157e): 66 to 67 grants, 16 to 17 failed."""
    clock = FakeClock()
    etcd = EtcdModel(clock)
    sim = Sim(clock, etcd)
    stats: dict[str, Any] = {"granted": 0, "failed": 0}
    for j in range(PROCESSES):
        p = Proc(f"p{j}", etcd, clock)
        sim.start(p, "s", _loop(p, stats, random.Random(seed * 1000 + j * 31)), ROUND_TRIP)
        clock.advance(0.0003)
    end = clock() + HORIZON
    sim.run(until=lambda: clock() >= end)
    assert stats["granted"] >= 60 and stats["failed"] <= 24, stats
