"""Turn review 2: a holder whose round trip is longer than the others' patience never wins.

``Turns.patience`` is how long a process lets another's claim stand, and its reason is "its
holder needs one round trip to win"; but it is reckoned from the *deferring* process's own
round trip (``PATIENCE_ATTEMPTS * self.attempt``, at least ``MIN_PATIENCE``), not from the
holder's. A process whose calls take longer than that patience (a farther client, a busier
machine, a GIL-bound worker) has its every claim taken over before its swap arrives.

Schedule (discrete events on the model's clock; p's round trip 20 ms, q's 1 ms; q acquires
and releases a key of its own in a closed loop, p asks once for keys of its own; no ranges
overlap, every swap compares the one section key):

1. p's first swap loses to one of q's (q commits several times during p's round trip).
2. p's second swap loses too, and claims the turn in its failure branch (claim c).
3. q's next swap fails on the turn's compare and brings c back: q defers (first sight of c),
   reading every ~2 ms. p's next swap, built on the failure branch's state, is on its way.
4. 10 ms later (q's patience: ``max(MIN_PATIENCE, 8 * 1 ms)``) q takes c over: its swap
   expects c and commits, deleting it. p's swap arrives 10 ms after that and loses.
5. p is no longer the holder (its claim is gone): it backs off, swaps again, loses to q's
   loop again, claims again: back to 3. p loses every swap until its deadline.

Invariant broken: no livelock / runs of losses bounded (the turn's purpose, issue 14). On main
p starves as well (no turn at all); the turn was meant to end exactly this.

Fix idea: the claim's value carries its holder's smoothed attempt time, and a deferring process
waits ``min(MAX_PATIENCE, PATIENCE_ATTEMPTS * max(own, holder's))``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from lessor import Partition
from lessor.etcd import core
from lessor.etcd.gate import Waiter
from lessor.etcd.ops import Op, Swap
from lessor.etcd.retry import Backoff
from tests.support.driver import Proc
from tests.support.etcd_model import EtcdModel, FakeClock
from tests.support.sim import Sim

P_ROUND_TRIP = 0.020
Q_ROUND_TRIP = 0.001


def _closed_loop(q: Proc, sid: str) -> Iterator[Op]:
    """q acquires one key of its own, releases it, and again, forever."""
    sec = q.section(sid)
    i = 0
    while True:
        m = q.member(Partition(100 + i % 50, 101 + i % 50), 10.0)
        w = Waiter(m, lambda: None)
        assert sec.gate.join(w)
        yield from core.lead(sec.known, sec.gate, w, q.config)
        if m.grant is not None and m.grant.handle is not None:
            assert isinstance(m.grant.handle, core.Held)
            yield from core.release(m.grant.handle, q.config)
        i += 1


def test_a_holder_slower_than_the_others_patience_still_wins() -> None:
    """Schedule in the module docstring: p's claims are taken over before its swap lands."""
    random.seed(14)
    clock = FakeClock()
    etcd = EtcdModel(clock)
    p, q = Proc("p", etcd, clock), Proc("q", etcd, clock)
    sec = p.section("s")
    m = p.member(Partition(0, 4), 2.0)
    m.backoff = Backoff(random.Random(14))
    w = Waiter(m, lambda: None)
    assert sec.gate.join(w)
    swaps = 0

    def count(op: Op) -> None:
        nonlocal swaps
        swaps += isinstance(op, Swap)

    sim = Sim(clock, etcd)
    sim.start(q, "s", _closed_loop(q, "s"), Q_ROUND_TRIP)
    sim.start(p, "s", core.lead(sec.known, sec.gate, w, p.config), P_ROUND_TRIP, count)
    sim.run(until=lambda: m.settled)
    assert m.grant is not None and m.grant.partitions, (
        f"p lost all {swaps} of its swaps in {m.deadline - m.started:.0f} s: {m.error!r}"
    )
