"""Turn review 4: short-deadline acquisitions of other processes take each other's claims
over so often that a far process defers to a new claim every ~100 ms, never for its patience,
and never sends a swap: it starves on a section where, on main, it wins in under 0.5 s.

c39eb50 made ``Turns.expect`` take another's claim over at once when deferring once more
would leave no time to read and swap before the swap's deadline. For a process 30 ms from
etcd that window is ``pause + 2 * attempt`` = 90 ms (above ``MIN_CALL_TIME``, so it fires);
an acquisition with ``acquire_timeout`` = 0.12 s respects a claim for at most its first ~30 ms.
Patience is counted per claim (``Turns._seen`` is the claim's create revision, and
``_seen_at`` starts again with every new one): a process that defers to a *succession* of
claims, each ended early by such a takeover and followed at once by another loser's claim,
never reaches its patience. It sends no swap, so it loses none and never claims the turn
itself: the rotation of the turn among the others passes it by.

Schedule (the simulator, ``tests/support/sim.py``: calls applied half a round trip after they
are sent, answered half a round trip later): h, 50 ms from etcd, asks once for keys of its own
with 3 s to get them; q0 to q3, 30 ms from etcd, each acquire a key of their own (no ranges
overlap) and release it in a closed loop, every acquisition with a 0.12 s deadline. Every swap
compares the one section key.

1. h's first two swaps lose; then a q's claim stands (patience ``8 * 50 ms = 0.4 s``).
2. About every 100 ms a q acquisition near its deadline takes the claim over; a q whose swap
   lost meanwhile claims anew. h reads every ~50 ms and sees a new claim each time or two:
   its patience starts again. Traced: claims at create revisions 5, 11, 15, 17, 21, ..., 97;
   h's next swap comes 2.9 s later, when its own deadline lets it take over, and loses.
3. h fails with ``DeadlineExceeded`` after three swaps in 3 s (seeds 0 to 2). The same test
   passes on main (no turn; h won in 0.3 to 0.46 s in variants explored) and on 8237d4f,
   before c39eb50 (0.7 to 1.9 s).

Invariant broken: liveness / fairness (no starvation; the turn's purpose, issue 14).

Fix idea: count patience per *deferral*, not per claim: ``_seen_at`` set when the process
first defers and kept while it goes on deferring to whichever claims (reset only when it sends
a swap or sees no turn); once patience is over it takes whatever claim stands over, and its
lost takeover claims the turn for it. And/or let a claim stand for at least its holder's
round trip (``turn.attempt``) even when the deferring acquisition's deadline is near.
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

H_ROUND_TRIP = 0.050
Q_ROUND_TRIP = 0.030
Q_DEADLINE = 0.12
QS = 4
H_DEADLINE = 3.0


def _short_loop(q: Proc, sid: str, base: int, rng: random.Random) -> Iterator[Op]:
    """q acquires one key of its own with a short deadline, releases it, and again, forever."""
    sec = q.section(sid)
    i = 0
    while True:
        m = q.member(Partition(base + i % 20, base + 1 + i % 20), Q_DEADLINE)
        m.backoff = Backoff(rng)
        w = Waiter(m, lambda: None)
        assert sec.gate.join(w)
        yield from core.lead(sec.known, sec.gate, w, q.config)
        if m.grant is not None and m.grant.handle is not None:
            assert isinstance(m.grant.handle, core.Held)
            yield from core.release(m.grant.handle, q.config)
        i += 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_short_deadline_acquisitions_do_not_starve_a_far_process(seed: int) -> None:
    """Schedule in the module docstring."""
    clock = FakeClock()
    etcd = EtcdModel(clock)
    h = Proc("h", etcd, clock)
    sec = h.section("s")
    m = h.member(Partition(0, 4), H_DEADLINE)
    m.backoff = Backoff(random.Random(seed))
    w = Waiter(m, lambda: None)
    assert sec.gate.join(w)
    swaps = 0

    def count(op: Op) -> None:
        nonlocal swaps
        swaps += isinstance(op, Swap)

    sim = Sim(clock, etcd)
    for i in range(QS):
        q = Proc(f"q{i}", etcd, clock)
        sim.start(q, "s", _short_loop(q, "s", 100 + 30 * i, random.Random(seed + i)), Q_ROUND_TRIP)
        clock.advance(0.003)  # out of step with the others
    sim.start(h, "s", core.lead(sec.known, sec.gate, w, h.config), H_ROUND_TRIP, count)
    sim.run(until=lambda: m.settled)
    assert m.grant is not None and m.grant.partitions, (
        f"h lost all {swaps} of its swaps in {H_DEADLINE:.0f} s: {m.error!r}"
    )
