"""Turn review 5 (holds): a far process that joins a section already hot with near processes'
claims (their deferral streaks started under earlier claims) still wins, and they never take
its claim over before its swap lands.

Schedule (the simulator, ``tests/support/sim.py``): four processes 1 ms from etcd with four
threads each (their gates never idle, so their losses and deferral streaks carry over from
one acquisition to the next) acquire one key out of 50 and release it, in a closed loop, with
1 s deadlines; after 0.5 s of that, f, 50 ms from etcd, asks once for keys of its own with 3 s
to get them.

What held (seeds 0 to 2): f won in 0.40 to 0.45 s with 3 or 4 swaps, taking no claim over and
having none of its own taken over (main: f never wins in 3 s, 56 swaps lost); the near ones'
longest acquisition stayed under 0.1 s.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from lessor import Partition
from lessor.etcd import core
from lessor.etcd.gate import Waiter
from lessor.etcd.ops import Op, Swap
from lessor.etcd.retry import Backoff
from tests.support.driver import Proc
from tests.support.etcd_model import EtcdModel, FakeClock
from tests.support.sim import Sim

NEAR, FAR = 0.001, 0.050
KEYS = 50


def _thread(p: Proc, rng: random.Random) -> Iterator[Op]:
    sec = p.section("s")
    while True:
        k = rng.randrange(KEYS)
        m = p.member(Partition(k, k + 1), 1.0)
        m.backoff = Backoff(random.Random(rng.random()))
        w = Waiter(m, lambda: None)
        grant = yield from core.acquire(sec.known, sec.gate, w, leads=sec.gate.join(w),
                                        turn=None, config=p.config)  # fmt: skip
        if grant.handle is not None:
            yield from core.release(grant.handle, p.config)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_far_process_joining_a_hot_section_wins(seed: int) -> None:
    clock = FakeClock()
    etcd = EtcdModel(clock)
    sim = Sim(clock, etcd)
    for j in range(4):
        p = Proc(f"p{j}", etcd, clock)
        for t in range(4):
            sim.start(p, "s", _thread(p, random.Random(seed * 1000 + j * 31 + t)), NEAR)
            clock.advance(0.0003)
    warm = clock() + 0.5
    sim.run(until=lambda: clock() >= warm)
    f = Proc("f", etcd, clock)
    sec = f.section("s")
    m = f.member(Partition(1000, 1004), 3.0)
    m.backoff = Backoff(random.Random(seed))
    w = Waiter(m, lambda: None)
    assert sec.gate.join(w)
    swaps = 0

    def count(op: Op) -> None:
        nonlocal swaps
        swaps += isinstance(op, Swap)

    began = clock()
    sim.start(f, "s", core.lead(sec.known, sec.gate, w, f.config), FAR, count)
    sim.run(until=lambda: m.settled)
    assert m.grant is not None and m.grant.partitions, m.error
    assert clock() - began < 0.6 and swaps <= 5, (clock() - began, swaps)
