"""A leader that stops contending without a win, holding the section's turn, deletes its claim
(``lead._end_turn``) apart from its caller: the caller's grant or error is settled, and must
not wait for that call (up to ``rpc_timeout``) before it is returned."""

from __future__ import annotations

from lessor import Partition
from lessor.etcd.keys import SectionKeys
from lessor.etcd.ops import CleanUp, DropTurn, Op, Swap
from tests.support.driver import PREFIX, two_processes


def test_a_holder_leaving_without_a_win_drops_its_claim_apart_from_its_caller() -> None:
    clock, etcd, p, q = two_processes()
    turn_key = SectionKeys.of(PREFIX, "s").turn
    m, _, steps = p.lead("s", Partition(0, 4), 5.0)
    swaps = 0
    ops: list[Op] = []
    claimer: list[int] = []

    def on_op(op: Op) -> None:
        nonlocal swaps
        ops.append(op)
        if isinstance(op, Swap):
            swaps += 1
            if swaps <= 2:  # q writes first: p's swap loses (and the second one claims)
                q.acquire("s", Partition(10 + swaps, 11 + swaps), 10.0)
                if swaps == 2:  # p's deadline comes before another call
                    clock.advance(m.deadline - clock() - 0.02)
                    assert m.lease is not None
                    claimer.append(m.lease.id)

    p.run("s", steps, on_op=on_op)
    assert m.error is not None  # its deadline came, holding the turn
    assert [etcd.kvs[turn_key].lease] == claimer  # p's claim stands when the caller returns
    assert not any(isinstance(op, DropTurn) for op in ops), "the caller waited for DropTurn"
    assert isinstance(ops[-1], CleanUp)  # its last step, after the etcd lease's give-back
    assert p.cleanups[-1] is ops[-1].steps
    p.run("s", p.cleanups.pop())  # that clean-up, on a thread (a task) of its own
    assert turn_key not in etcd.kvs
