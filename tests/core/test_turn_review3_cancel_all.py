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

import pytest

from lessor import Partition
from lessor.etcd.gate import Waiter
from lessor.etcd.keys import SectionKeys
from lessor.etcd.ops import Op, Swap, Wait
from tests.support.driver import PREFIX, Interrupt, two_processes


def test_a_claim_is_dropped_when_every_acquisition_of_its_process_is_cancelled() -> None:
    """Schedule in the module docstring."""
    _, etcd, p, q = two_processes()
    sec = p.section("s")
    turn_key = SectionKeys.of(PREFIX, "s").turn
    a, wa, steps = p.lead("s", Partition(0, 4), 5.0)
    b = p.member(Partition(4, 8), 5.0)
    wb = Waiter(b, lambda: None)
    swaps = 0
    cancelled = False

    def on_op(op: Op) -> None:
        nonlocal swaps
        if isinstance(op, Swap):
            swaps += 1
            q.acquire("s", Partition(10 + swaps, 11 + swaps), 10.0)  # q writes first

    def throw(op: Op) -> BaseException | None:
        nonlocal cancelled
        if isinstance(op, Wait) and sec.known.turns.holding and not cancelled:
            assert op.seconds == 0 and turn_key in etcd.kvs  # a holds the turn: pause 0
            assert not sec.gate.join(wb)  # b queues behind a
            cancelled = True
            return Interrupt()  # a's cancellation runs first
        return None

    with pytest.raises(Interrupt):
        p.run("s", steps, on_op=on_op, throw=throw)
    assert wb.lead  # a handed the lead to b ...
    p.give_up("s", wa)
    p.give_up("s", wb)  # ... whose cancel runs next
    assert a.settled and b.settled
    assert not sec.gate.leading and not sec.gate.queued  # p acquires nothing any more
    claim = etcd.kvs.get(turn_key)
    assert claim is None, (
        f"p stopped acquiring, yet its claim (etcd lease {claim.lease:x}, alive: "
        f"{claim.lease in etcd.leases}; p's Turns holding: {sec.known.turns.holding}) stands"
    )
