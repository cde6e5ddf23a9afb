"""What the memory lessor adds to the contract."""

from __future__ import annotations

from lessor import MemoryLessor, Partition

P = Partition


def test_held_lists_live_leases_and_forgets_released_ones() -> None:
    lessor = MemoryLessor()
    with lessor.lease("s", P(0, 10), 60) as a, lessor.lease("s", P(5, 20), 60) as b:
        assert lessor.held("s") == {a.token: [P(0, 10)], b.token: [P(10, 20)]}
    assert lessor.held("s") == {}
    assert lessor._sections == {}  # nothing left behind for released sections


def test_private_instances_do_not_share() -> None:
    one, two = MemoryLessor(), MemoryLessor()
    with one.lease("s", P(0, 10), 60), two.lease("s", P(0, 10), 60) as lease:
        assert lease.partitions == [P(0, 10)]
