"""Regression tests from the review of the turn (``turn.py``): a swap that asked to claim the
turn, lost, and claimed nothing (another process's claim was already there) must not take that
other claim for its own, even when the other claim was the section's newest write. A Txn that
writes nothing answers with the store's current revision, which is then exactly the other
claim's create revision: the prototype decided "ours" by ``turn.create_revision == revision``
and took it. "Ours" is now decided by the turn's etcd lease (``Turns.claiming``).
"""

from __future__ import annotations

import pytest

from lessor.etcd.calls import run
from lessor.etcd.leases import EtcdLease
from lessor.etcd.section import Entry
from lessor.etcd.state import Turn
from lessor.etcd.transport import LeaseNotFound
from lessor.etcd.turn import Turns
from lessor.partition import Partition, SortedPartitions
from tests.etcd.test_turn_txns import Side, sides  # noqa: F401  (the fixture)


def lost_claiming(side: Side, fresh_turn: Turn | None) -> Turns:
    """``side``'s view of the turn after a claiming swap of its own (on its own lease, after one
    lost swap before: ``CLAIM_AFTER``) lost and brought back ``fresh_turn``."""
    turns = Turns()
    turns.losses = 1
    turns.claiming(EtcdLease(side.lease, 30, 0.0), now=0.0)
    turns.swapped(False, fresh_turn, seconds=0.003, now=0.0)
    return turns


def test_a_claim_that_did_not_happen_is_not_taken_for_ours(
    sides: tuple[Side, Side],  # noqa: F811
) -> None:
    """Guards against taking another process's claim, made at the reply's revision, for the
    claim our own failure branch was asked to make (and could not)."""
    a, b = sides
    before = a.read()
    a.swap(before, [a.entry(1, 0, 4)])  # a wins once
    b_state, _ = b.swap(before, [b.entry(1, 2, 8)], claim=True)  # b loses and claims
    assert b_state.turn is not None and b_state.turn.lease == b.lease
    # a's next swap, built on the old state too, asks to claim and loses: the turn is b's.
    fresh, written = a.swap(before, [a.entry(2, 8, 9)], claim=True)
    assert not written
    assert fresh.turn == b_state.turn  # a claimed nothing: the turn is still b's ...
    assert fresh.revision == fresh.turn.create_revision  # ... and nothing was written since
    turns = lost_claiming(a, fresh.turn)
    assert not turns.holding, (
        f"a takes b's claim (lease {b.lease:x}, create revision {fresh.turn.create_revision}) "
        "for its own"
    )


def test_a_process_never_drops_another_process_claim(
    sides: tuple[Side, Side],  # noqa: F811
) -> None:
    """Guards against what that misattribution led to: a's leader, leaving with nobody queued
    (``lead._end_turn``), deleted b's claim, which ``drop_turn`` says it never does."""
    a, b = sides
    before = a.read()
    a.swap(before, [a.entry(1, 0, 4)])
    b_state, _ = b.swap(before, [b.entry(1, 2, 8)], claim=True)
    fresh, _ = a.swap(before, [a.entry(2, 8, 9)], claim=True)
    turns = lost_claiming(a, fresh.turn)
    if turns.holding:  # what _end_turn does when a leaves
        run(a.transport, a.txns.drop_turn(turns.claimed, 0, 5.0))
    assert a.read().turn == b_state.turn, "a deleted b's claim of the turn"


def test_a_lost_swap_claiming_on_a_gone_lease_is_refused_whole(
    sides: tuple[Side, Side],  # noqa: F811
) -> None:
    """Guards what the core relies on (``attempt._lease_gone``): etcd checks the leases of the
    branch it takes, nested Txns included, so a swap that lost, whose claim names an etcd
    lease gone, is refused whole (NOT_FOUND) where without the claim it would come back as a
    plain loss with the fresh state. Nothing is written."""
    a, b = sides
    before = a.read()
    a.swap(before, [a.entry(1, 0, 4)])
    gone = b.transport.lease("LeaseGrant", b.transport.rpc.LeaseGrantRequest(TTL=30), 5, "t")
    b.transport.lease("LeaseRevoke", b.transport.rpc.LeaseRevokeRequest(ID=gone.ID), 5, "t")
    entry = Entry(int(gone.ID), 1, SortedPartitions([Partition(2, 8)]), "b")
    after = a.read()
    with pytest.raises(LeaseNotFound):
        run(b.transport, b.txns.swap(before, before.live(), [], [entry], 5.0, claim=True))
    assert a.read().revision == after.revision  # nothing written
    fresh, written = run(b.transport, b.txns.swap(before, before.live(), [], [entry], 5.0))
    assert not written and fresh.revision == after.revision  # without the claim: a loss
