"""Turn review 6: a deferral costs an acquisition that needs no write its answer, when it
shares the attempt with one that does.

``_swap`` reckons "no time left to defer" against the deadlines of the attempt's *writers*
only (``last = min(m.deadline for m in writers) - MIN_CALL_TIME``). An acquisition of the same
attempt whose keys are all held by others gets an empty grant from that very swap, and is
no writer: its deadline is not looked at, and the whole attempt defers past it.

Schedule (the in-memory etcd, on the model's clock, 1 ms per call for p):

1. q holds keys 10-11 for 30 s.
2. h, 60 ms from etcd, loses two swaps to q's writes and claims the turn (the claim says its
   swaps take 60 ms: the others' patience is ``8 * 60 ms = 0.48 s``); h is driven no more (it
   crashed, or is just slow).
3. p has two acquisitions in its gate: a (keys 0-4, free, 10 s) leads, b (keys 10-11, q's,
   0.2 s) waits and joins a's attempt. The plan: a writes keys 0-4, b gets nothing (an empty
   grant, settled by the same swap).
4. The swap is for a alone as far as the deferral goes: a has 10 s, so p defers to h's claim
   for its full patience (0.48 s). b's deadline passes at 0.2 s: b fails with
   ``DeadlineExceeded``. At 0.48 s p takes the claim over and a is granted.

Invariant broken: "a deferral never costs an acquisition its grant" (``turn.py``,
``Turns.expect``); b's answer (nothing free: an empty grant) was there in the first attempt,
as it is without the turn (b alone, with no writer, settles at once: ``went_on``).

Severity: low to medium. Needs a process whose acquisitions mix short deadlines with keys
held by others and longer ones for free keys on a section with a claim standing (a far or
crashed holder); the caller gets ``DeadlineExceeded`` instead of an empty lease.

Fix idea: reckon ``last`` over every member of the plan (``plan.proposals``), not only the
writers; or settle the empty-grant members of a deferred attempt before deferring (their
answer needs no write when the state was read after they began, else a check), as the
no-writer path does.
"""

from __future__ import annotations

from lessor import Partition
from lessor.etcd.gate import Waiter
from lessor.etcd.ops import Op, Read, Swap
from tests.support.driver import Proc, claim_and_stop, two_processes

FAR, NEAR = 0.06, 0.001


def test_an_empty_grant_does_not_wait_out_a_claim_past_its_deadline() -> None:
    """Schedule in the module docstring."""
    clock, etcd, q, h = two_processes()
    q.acquire("s", Partition(10, 11), 30.0)
    claim_and_stop(h, q, "s", FAR, q_keys=20).close()  # h is driven no more; its claim stands

    p = Proc("p", etcd, clock)
    a, _, lead = p.lead("s", Partition(0, 4), 10.0)
    b = p.member(Partition(10, 11), 0.2)
    assert not p.section("s").gate.join(Waiter(b, lambda: None))  # b waits; a's attempt takes it

    def on_op(op: Op) -> None:
        if isinstance(op, Swap | Read):
            clock.advance(NEAR)

    p.run("s", lead, on_op=on_op)
    p.finish_cleanups("s")
    assert a.grant is not None and a.grant.partitions
    assert b.error is None, f"b failed ({b.error!r}) where an empty grant was its answer"
    assert b.grant is not None and not b.grant.partitions
