"""Regression tests from the review of the turn (``turn.py``, ``core/lead.py``): the
prototype's leader paused 0 after *every* failed attempt while its process held the section's
turn, not only after a lost swap. When etcd stopped answering (calls failing fast,
UNAVAILABLE), the holder retried with no backoff at all until its deadline, where main backs
off exponentially (``Backoff.after_transient``, up to 0.5 s); with too little time left for a
call, it spun. The holder now pauses 0 only right after a Txn of its own lost (``lead._lost``).
"""

from __future__ import annotations

from lessor import Partition
from lessor.etcd import core
from lessor.etcd.gate import Waiter
from lessor.etcd.ops import Op, Swap, Wait
from tests.support.driver import Proc
from tests.support.etcd_model import EtcdModel, FakeClock

FAST_FAIL = 0.001  # how long a call to an etcd that is down takes to fail (seconds)


def test_a_turn_holder_backs_off_while_etcd_is_down() -> None:
    """Guards against a turn holder hammering an etcd that is down with calls."""
    clock = FakeClock()
    etcd = EtcdModel(clock)
    p, q = Proc("p", etcd, clock), Proc("q", etcd, clock)
    sec = p.section("s")
    m = p.member(Partition(0, 4), 5.0)
    w = Waiter(m, lambda: None)
    assert sec.gate.join(w)
    swaps = 0
    down = False
    calls_down = 0
    pauses: list[float] = []

    def on_op(op: Op) -> None:
        nonlocal swaps, down, calls_down
        if down:
            clock.advance(FAST_FAIL)  # a failing call, or the loop's own time: the model's
            # clock moves only when told (a Wait(0) in the last MIN_CALL_TIME would spin)
            if isinstance(op, Wait):
                pauses.append(op.seconds)
            else:
                calls_down += 1
        if isinstance(op, Wait):
            return
        if isinstance(op, Swap) and not down:
            swaps += 1
            if swaps <= 2:  # q writes first: p's swap loses (and the second one claims)
                q.acquire("s", Partition(10 + swaps, 11 + swaps), 10.0)
            else:
                down = True  # etcd goes away while p holds the turn

    def fault(op: Op) -> str:
        return "dropped" if down else "ok"

    p.run("s", core.lead(sec.known, sec.gate, w, p.config), fault=fault, on_op=on_op)
    assert m.error is not None  # etcd never came back
    assert swaps == 3
    # main: ~ a dozen calls in these 5 s (0.01 s doubling to 0.5 s between them)
    assert calls_down < 100, (
        f"{calls_down} calls in {m.deadline - m.started:.0f} s to an etcd that is down, "
        f"total pause {sum(pauses):.3f} s over {len(pauses)} pauses"
    )


class Spinning(Exception):
    """The leader went round its loop this often without a call or a moment's pause."""


def test_a_turn_holder_with_no_time_for_a_call_does_not_spin() -> None:
    """Guards against a busy loop found by tests/test_acquisition_model.py
    (``--hypothesis-seed=1``, 600 examples: "the model did not come to rest: [('p0#3', 'Wait',
    None)]"). A member left with less than ``MIN_CALL_TIME`` stays queued without a call
    (``attempt._ready``) and the attempt returns None; main then pauses a jitter
    (``Backoff.after``), so its deadline comes. The prototype's turn holder paused 0: in the
    model the clock never moved again (the model test could never end); in a real process it
    was a busy loop, holding the GIL, up to ``MIN_CALL_TIME``."""
    clock = FakeClock()
    etcd = EtcdModel(clock)
    p, q = Proc("p", etcd, clock), Proc("q", etcd, clock)
    sec = p.section("s")
    m = p.member(Partition(0, 4), 5.0)
    w = Waiter(m, lambda: None)
    assert sec.gate.join(w)
    swaps = 0
    idle = 0  # Waits in a row with no call between them and no time passing

    def on_op(op: Op) -> None:
        nonlocal swaps, idle
        if isinstance(op, Swap):
            swaps += 1
            if swaps <= 2:  # q writes first: p's swap loses (and the second one claims)
                q.acquire("s", Partition(10 + swaps, 11 + swaps), 10.0)
                if swaps == 2:  # p is left with too little time for another call
                    clock.advance(m.deadline - clock() - 0.02)
        if isinstance(op, Wait) and op.seconds == 0.0:
            idle += 1
            if idle > 1000:
                raise Spinning(f"{idle} pauses of 0 s in a row, {m.deadline - clock():.3f} s left")
        else:
            idle = 0

    p.run("s", core.lead(sec.known, sec.gate, w, p.config), on_op=on_op)
    assert m.error is not None  # its deadline came
