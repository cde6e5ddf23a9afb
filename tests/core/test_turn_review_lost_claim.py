"""Regression test from the review of the turn (``turn.py``): a swap whose reply was lost,
that lost and claimed the turn in its failure branch. The retry reads the section again and
finds a claim made by its own Txn on its own etcd lease. The prototype did not know it for its
own: ``Turns.expect`` took it for another's and deferred to it (no swap) for its whole
patience, while every other process deferred to it too, so nobody swapped the section until
that patience ended. A claim on a lease that a claiming swap of ours named is now ours
(``Turns.claiming``, told before the swap is sent).

Safety held there too (the retry adopts nothing it should not: it finds no marker of its
own); what was lost is the time the turn is meant to save.
"""

from __future__ import annotations

from lessor import Partition
from lessor.etcd.keys import SectionKeys
from lessor.etcd.ops import Op, Read, Swap, TakeLease, Track
from tests.support.driver import PREFIX, two_processes

ROUND_TRIP = 0.003


def test_a_claim_whose_reply_was_lost_is_still_recognised_as_ours() -> None:
    """Guards against a process deferring, for its whole patience, to its own claim."""
    clock, etcd, p, q = two_processes()
    turn_key = SectionKeys.of(PREFIX, "s").turn
    m, _, steps = p.lead("s", Partition(0, 4), 5.0)
    swaps = 0
    ops: list[tuple[int, str]] = []  # (swaps sent before it, what)
    claimer: list[int] = []

    def on_op(op: Op) -> None:
        nonlocal swaps
        if isinstance(op, Swap | Read):
            clock.advance(ROUND_TRIP)
        if swaps == 2 and isinstance(op, Read) and not claimer:
            claimer.append(etcd.kvs[turn_key].lease)  # the turn as the lost swap left it
        if isinstance(op, Swap):
            swaps += 1
            if swaps <= 2:  # q writes first: p's swap loses (and the second one claims)
                q.acquire("s", Partition(10 + swaps, 11 + swaps), 10.0)
        if not isinstance(op, TakeLease | Track):
            ops.append((swaps, type(op).__name__))

    def fault(op: Op) -> str:
        return "lost" if isinstance(op, Swap) and swaps == 2 else "ok"

    p.run("s", steps, fault=fault, on_op=on_op)
    assert m.grant is not None and m.grant.partitions  # it ends well ...
    assert m.lease is not None and claimer == [m.lease.id]  # the lost swap claimed, on p's lease
    between = [what for n, what in ops if n == 2][1:]  # after the lost swap, up to the next
    # a pause after the lost reply (a transient error), a read, then its swap at once
    assert between == ["Wait", "Read"], f"p deferred to its own claim: {between}"
