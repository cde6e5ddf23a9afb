"""Turn review 3: a leader interrupted while its claiming swap is in flight leaves the claim.

Review 2's fix drops a claim the interrupted leader *knows* it holds (``lead._end_turn``:
``Turns.holding``). A claiming swap whose reply the interruption cut off is not known to have
claimed: ``Turns.swapped`` never ran, ``claimed`` stays 0, so ``_end_turn`` drops nothing,
although ``Turns.claiming`` already knows the claim for this process's (its etcd lease). In
asyncio this is the routine path: a task cancelled (``asyncio.timeout``, ``wait_for``, a
cancelled request handler) while it awaits the swap, the request already sent.

Schedule (``other-grant-held``; ``alone`` holds, see below):

0. p holds a grant of another section, on the etcd lease its acquisitions share.
1. q writes before each of p's first two swaps: p's first swap loses, its second (which
   claims in its failure branch) reaches etcd and is applied (the claim is made).
2. Before the reply is handled, the leader is interrupted (thrown in at the ``Swap``).
3. p's way out (``lead``'s ``except BaseException``, then ``give_up``) and every clean-up run
   to their end; nobody else of p's is queued.
4. The claim stands on p's live etcd lease: every other process defers to it for its
   patience (and one whose deadline is shorter fails: ``test_turn_review3_short_deadline``).

Alone (no other grant of p's on that etcd lease), the claim goes: the interrupted member's
swap is ambiguous, so it is abandoned, its etcd lease retired, and the pool revokes the lease
once idle, which deletes the claim with it. With another grant on the lease, the lease is
retired but lives until that grant's release (up to its ``dur``), and the claim with it.

Invariant broken: liveness (a holder that stops contending without a win drops its claim,
``turn.py``). Bounded by the others' patience, as a claim applied late is, but here the
process could know: the claim lies on an etcd lease its claiming swap named.

Fix idea: ``Turns`` remembers a claiming swap whose outcome is unknown (the lease it named);
``_end_turn`` then drops "the turn if it lies on that lease" (a ``Compare`` on ``LEASE``
instead of ``CREATE``), or reads it first.
"""

from __future__ import annotations

import pytest

from lessor import Partition
from lessor.etcd.keys import SectionKeys
from lessor.etcd.ops import Op, Swap
from tests.support.driver import PREFIX, Interrupt, two_processes


@pytest.mark.parametrize("other_grant", [False, True], ids=["alone", "other-grant-held"])
def test_a_leader_interrupted_during_its_claiming_swap_leaves_no_claim(other_grant: bool) -> None:
    """Schedule in the module docstring."""
    _, etcd, p, q = two_processes()
    if other_grant:  # p holds a grant of another section, on the etcd lease it shares
        assert p.acquire("o", Partition(0, 1), 5.0).grant is not None
    sec = p.section("s")
    turn_key = SectionKeys.of(PREFIX, "s").turn
    m, w, steps = p.lead("s", Partition(0, 4), 5.0)
    swaps = 0
    interrupted = False

    def on_op(op: Op) -> None:
        nonlocal swaps
        if isinstance(op, Swap):
            swaps += 1
            q.acquire("s", Partition(10 + swaps, 11 + swaps), 10.0)  # q writes first

    def throw(op: Op) -> BaseException | None:
        nonlocal interrupted
        if isinstance(op, Swap) and op.claim is not None and not interrupted:
            assert turn_key in etcd.kvs  # applied: the claim is made
            interrupted = True
            return Interrupt()  # the reply is never handled
        return None

    with pytest.raises(Interrupt):
        p.run("s", steps, on_op=on_op, throw=throw)
    p.give_up("s", w)
    assert not sec.gate.leading and not sec.gate.queued  # p acquires nothing any more
    claim = etcd.kvs.get(turn_key)
    assert claim is None, (
        f"p stopped acquiring, yet the claim its interrupted swap made (etcd lease "
        f"{claim.lease:x}, alive: {claim.lease in etcd.leases}, p's own: "
        f"{m.lease is None or claim.lease == m.lease.id}) stands"
    )
