"""Turn review 5 (holds): no two pauses of 0 in a row, under takeover storms.

A pause of 0 is the turn holder's after a Txn of its own lost (``lead._pause``); anywhere else
it would be a busy loop. Explored with ``tests/support/sim.py``: eight processes 30 ms from
etcd with 0.25 s acquisitions (takeovers of claims at every deadline,
``test_turn_review5_equal_far.py``), and eight near processes with 0.12 s acquisitions beside
two 30 ms away with two threads each on overlapping keys (empty grants, group commits).
Checked on every thread's every step: a ``Wait(0)`` is never followed by another. (It is not
always followed by a call: a holder whose swap lost with under ``MIN_CALL_TIME`` left pauses
0, then its next attempt makes no call and it backs off a jitter of 1 to 2 ms; seen in
every run here, harmless.) Runs of short pauses (< 0.5 ms) with no call between them
happen in the last 50 ms before a deadline (too little time for a call: ``attempt._ready``),
as on main (13 to 19 there, 14 to 21 here): not the turn's.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from lessor import Partition
from lessor.etcd import core
from lessor.etcd.gate import Waiter
from lessor.etcd.ops import Op, Wait
from lessor.etcd.retry import Backoff
from tests.support.driver import Proc
from tests.support.etcd_model import EtcdModel, FakeClock
from tests.support.sim import Sim

GROUPS = {
    "equal-far": [(0.030, 1, 0.25, 400, 1)] * 8,
    "mixed": [(0.001, 1, 0.12, 50, 1)] * 8 + [(0.030, 2, 0.3, 50, 2)] * 2,
}


def _thread(p: Proc, rng: random.Random, dl: float, keys: int, width: int) -> Iterator[Op]:
    sec = p.section("s")
    while True:
        k = rng.randrange(keys)
        m = p.member(Partition(k, k + width), dl)
        m.backoff = Backoff(random.Random(rng.random()))
        w = Waiter(m, lambda: None)
        try:
            grant = yield from core.acquire(sec.known, sec.gate, w, leads=sec.gate.join(w),
                                            turn=None, config=p.config)  # fmt: skip
        except Exception:
            continue
        if grant.handle is not None:
            yield from core.release(grant.handle, p.config)


@pytest.mark.parametrize("group", sorted(GROUPS))
@pytest.mark.parametrize("seed", [0, 1])
def test_no_two_pauses_of_0_in_a_row(group: str, seed: int) -> None:
    clock = FakeClock()
    etcd = EtcdModel(clock)
    sim = Sim(clock, etcd)
    busy: list[str] = []
    zeros = 0
    for j, (rtt, threads, dl, keys, width) in enumerate(GROUPS[group]):
        p = Proc(f"p{j}", etcd, clock)
        for t in range(threads):
            last: list[Op | None] = [None]

            def check(op: Op, last: list[Op | None] = last, who: str = f"p{j}.{t}") -> None:
                nonlocal zeros
                before = last[0]
                if isinstance(before, Wait) and before.seconds == 0:
                    zeros += 1
                    if isinstance(op, Wait) and op.seconds == 0:
                        busy.append(f"{who} at {clock():.4f}: {op!r} after a pause of 0")
                last[0] = op

            rng = random.Random(seed * 1000 + j * 31 + t)
            sim.start(p, "s", _thread(p, rng, dl, keys, width), rtt, check)
            clock.advance(0.0003)
    end = clock() + 2.0
    sim.run(until=lambda: clock() >= end or bool(busy))
    assert zeros and not busy, busy[:3]
