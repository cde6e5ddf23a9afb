"""Turn review 3: when every acquisition of a process is interrupted at once (a TaskGroup
aborted, a server's shutdown cancelling its tasks), the turn holder's claim is left behind.

Review 2's fix: a leader that an exception reaches drops its claim "when nobody else of its
process is queued" (``lead._end_turn``: ``gate.queued_besides``), for a queued acquisition
carries on with it. But a queued acquisition that is interrupted too never leads: its way out
is ``give_up`` (``gate.leave``), which drops nothing. Which of the two runs first decides: if
the leader's cancellation runs first it sees the other queued, keeps the claim and hands the
lead over; the other's cancellation then takes it out of the gate, and nobody ends the claim.

Schedule (asyncio, two tasks of one process on one section; here driven step by step):

1. Task a leads alone. q writes before each of a's first two swaps: a's second swap loses
   and claims the turn; a holds it and pauses 0 before its next swap.
2. Task b joins the gate (queued behind a's attempt).
3. Both tasks are cancelled in one turn of the loop: a's cancellation runs first (thrown in
   at a's pause): ``_end_turn`` sees b queued and keeps the claim; a hands the lead to b.
4. b's cancellation runs: ``give_up`` takes it out of the gate (it held no etcd lease).
5. Every clean-up runs to its end. The process acquires nothing, its ``Turns`` still says it
   holds the turn, and the claim stands on its etcd lease, alive in its pool: every other
   process defers to it for its patience (one whose deadline is shorter fails:
   ``test_turn_review3_short_deadline``).

Invariant broken: liveness (a holder that stops contending without a win drops its claim,
``turn.py``). Bounded by the others' patience, as a crashed holder's claim.

Fix idea: the gate tells whoever takes the last waiter out of it (``leave``, ``withdraw``,
``hand_over`` with an empty queue) that the lead ended with nobody to carry on; that way out
drops a claim still held (``_end_turn`` moved to the gate's "lead ended" moment, not to the
leader's exit).
"""

from __future__ import annotations

from lessor import Partition
from lessor.etcd import core
from lessor.etcd.gate import Waiter
from lessor.etcd.keys import SectionKeys
from lessor.etcd.ops import CleanUp, Op, Swap, Wait
from tests.support.driver import PREFIX, Proc
from tests.support.etcd_model import EtcdModel, FakeClock


class Cancel(BaseException):
    """Stands for an asyncio task's cancellation."""


def test_a_claim_is_dropped_when_every_acquisition_of_its_process_is_cancelled() -> None:
    """Schedule in the module docstring."""
    clock = FakeClock()
    etcd = EtcdModel(clock)
    p, q = Proc("p", etcd, clock), Proc("q", etcd, clock)
    sec = p.section("s")
    turn_key = SectionKeys.of(PREFIX, "s").turn
    a = p.member(Partition(0, 4), 5.0)
    wa = Waiter(a, lambda: None)
    assert sec.gate.join(wa)
    steps = core.lead(sec.known, sec.gate, wa, p.config)
    b = p.member(Partition(4, 8), 5.0)
    wb = Waiter(b, lambda: None)
    swaps = 0
    result: object = None
    error: BaseException | None = None
    cancelled = False
    while True:
        try:
            op: Op = steps.send(result) if error is None else steps.throw(error)
        except Cancel:
            break
        result, error = None, None
        if isinstance(op, CleanUp):
            p.cleanups.append(op.steps)
            continue
        if isinstance(op, Wait):
            if sec.known.turns.holding and not cancelled:  # a holds the turn: pause 0
                assert op.seconds == 0 and turn_key in etcd.kvs
                assert not sec.gate.join(wb)  # b queues behind a
                cancelled = True
                error = Cancel()  # a's cancellation runs first
            else:
                clock.advance(op.seconds)
            continue
        if isinstance(op, Swap):
            swaps += 1
            q.acquire("s", Partition(10 + swaps, 11 + swaps), 10.0)  # q writes first
        try:
            result = sec.perform(op)
        except Exception as e:
            error = e
    assert cancelled and wb.lead  # a handed the lead to b ...
    p.run("s", core.give_up(sec.known, sec.gate, wa, p.config))
    p.run("s", core.give_up(sec.known, sec.gate, wb, p.config))  # ... whose cancel runs next
    while p.cleanups:
        p.run("s", p.cleanups.pop(0))
    assert a.settled and b.settled
    assert not sec.gate.leading and not sec.gate.queued  # p acquires nothing any more
    claim = etcd.kvs.get(turn_key)
    assert claim is None, (
        f"p stopped acquiring, yet its claim (etcd lease {claim.lease:x}, alive: "
        f"{claim.lease in etcd.leases}; p's Turns holding: {sec.known.turns.holding}) stands"
    )
