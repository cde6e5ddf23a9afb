"""Turn review 2 (holds): the largest swap the core can send, with the turn and riding releases
together, on the in-memory etcd and on a real one.

The largest: 68 entries relied on and 32 of ours (``MAX_LIVE_LEASES`` = 100 live at most),
16 abandoned markers dropped (``MAX_DROPS``), 32 releases riding (``MAX_RIDES``), the turn
compared, and a claim nested in the failure branch. etcd counts a Txn's size as the largest of
its compares and branches (here 102 compares), and allows a nested Txn only the room left under
``--max-txn-ops`` (128): the claim needs 1. One released marker is in ``drop`` too: etcd refuses
a put and a delete of one key in a branch ("duplicate key given in txn request"), not two
deletes of it.
"""

from __future__ import annotations

from lessor.etcd.calls import run
from lessor.etcd.keys import Owner
from lessor.etcd.section import Entry
from tests.etcd.test_turn_txns import Side, sides

__all__ = ["sides"]

RELIED, OURS, DROPS, RIDES = 68, 32, 16, 32


def _fill(a: Side, count: int) -> list[Entry]:
    entries = [a.entry(seq, 1000 + seq, 1001 + seq) for seq in range(1, count + 1)]
    snapshot = a.read()
    for i in range(0, count, 40):
        snapshot, written = a.swap(snapshot, entries[i : i + 40])
        assert written
    return entries


def test_the_largest_swap_with_a_claim_and_rides_is_accepted_in_both_branches(
    sides: tuple[Side, Side],
) -> None:
    a, b = sides
    theirs = _fill(a, RELIED + DROPS + RIDES)
    relied = theirs[:RELIED]
    drop = [e.owner for e in theirs[RELIED : RELIED + DROPS]]
    released = [e.owner for e in theirs[RELIED + DROPS :]] + [drop[0]]  # one in both
    ours = [b.entry(seq, seq, seq + 1) for seq in range(1, OURS + 1)]

    # The failure branch: the snapshot went stale; the releases go, and b claims the turn.
    stale = b.read()
    _, written = a.swap(a.read(), [])
    assert written
    fresh, written = run(b.transport, b.txns.swap(stale, relied, relied, ours, 5.0, drop=drop,
                                                  claim=True, released=released[:8]))  # fmt: skip
    assert not written
    assert fresh.turn is not None and fresh.turn.lease == b.lease
    assert not set(released[:8]) & set(fresh.markers)

    # The success branch: b's claim expected and deleted, drops and releases deleted.
    now = b.read()
    assert now.turn is not None
    _, written = run(b.transport, b.txns.swap(now, relied, relied, ours, 5.0, drop=drop,
                                                 turn=now.turn.create_revision,
                                                 released=released))  # fmt: skip
    assert written
    after = b.read()
    assert after.turn is None
    gone: set[Owner] = set(drop) | set(released)
    assert not gone & set(after.markers)
    assert {e.owner for e in ours} <= set(after.markers)
