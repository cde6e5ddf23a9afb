"""Turn review 3 (holds): a takeover swap that also claims (it expects another's claim, and
its process lost before, so its failure branch claims) is one shape etcd accepts in both
branches: the success branch deletes the turn key, the failure branch's nested Txn puts it,
which etcd checks branch by branch (``checkIntervals`` on ``success`` and on ``failure``
apart). Lost, it leaves the claim it expected in place (the nested compare finds the turn
taken); won, it ends it. On the in-memory etcd and on a real one alike."""

from __future__ import annotations

from lessor.etcd.calls import run
from tests.etcd.test_turn_txns import Side, sides

__all__ = ["sides"]


def test_a_takeover_that_claims_too_is_accepted_and_never_claims_over_a_claim(
    sides: tuple[Side, Side],
) -> None:
    a, b = sides
    before = a.read()
    _, written = a.swap(before, [a.entry(1, 0, 4)])
    assert written
    claimed, written = b.swap(before, [b.entry(1, 10, 14)], claim=True)  # stale: loses, claims
    assert not written and claimed.turn is not None and claimed.turn.lease == b.lease
    c = claimed.turn.create_revision

    # a takes b's claim over on a state from before its own last win: it loses, and its own
    # claim finds the turn taken: b's claim stands, as it was.
    fresh, written = run(a.transport, a.txns.swap(before, before.live(), [], [a.entry(2, 20, 24)],
                                                  5.0, turn=c, claim=0.01))  # fmt: skip
    assert not written
    assert fresh.turn is not None
    assert (fresh.turn.lease, fresh.turn.create_revision) == (b.lease, c)  # b's, untouched

    # on the fresh state, the takeover that claims too wins and ends b's claim
    now = a.read()
    won, written = run(a.transport, a.txns.swap(now, now.live(), [], [a.entry(3, 80, 84)], 5.0,
                                                turn=c, claim=0.01))  # fmt: skip
    assert written and won.turn is None
    assert a.read().turn is None
