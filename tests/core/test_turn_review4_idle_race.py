"""Turn review 4 (holds): a new leader that joins the gate while the old one leaves it idle and
drops the process's claim (``lead._end_turn``) loses at most one swap to that drop.

Schedule (the in-memory etcd; the threads' interleaving forced at the one point between
``_end_turn``'s ``gate.idle`` and ``Turns.leaving``, where no lock is held):

1. p's leader A loses a swap to q, and its next one loses too and claims the turn (c, on A's
   etcd lease): A holds the turn. A's thread is then interrupted (KeyboardInterrupt at its
   pause): A hands the lead over, finds the gate idle ...
2. ... and there, before ``Turns.leaving``, p's acquisition B joins the gate, leads, reads
   the state (c: ours, held), and sends its swap, which expects c.
3. A's ``leaving`` forgets c (B's view of it too) and spawns the drop of c, which lands before
   B's swap: B's swap loses (c is gone) and brings back no turn.
4. B's next swap (it claims the turn if it loses) commits: B is granted.

Checked: B is granted after at most two swaps, the turn key is gone at the end, and no pause
of 0 is taken while p holds no claim (no busy loop from a view the other thread changed).
"""

from __future__ import annotations

from typing import Any

from lessor import Partition
from lessor.etcd import core
from lessor.etcd.gate import Waiter
from lessor.etcd.keys import SectionKeys
from lessor.etcd.ops import CleanUp, Op, Steps, Swap, Wait
from tests.support.driver import PREFIX, Proc
from tests.support.etcd_model import EtcdModel, FakeClock


def _until(proc: Proc, steps: Steps, stop: Any, result: Any = None) -> Op | None:
    """Drive ``steps`` for ``proc`` until ``stop(op)``; that op is returned unperformed (None:
    ``steps`` ended)."""
    sec = proc.section("s")
    error: BaseException | None = None
    while True:
        try:
            op = steps.send(result) if error is None else steps.throw(error)
        except StopIteration:
            return None
        result, error = None, None
        if stop(op):
            return op
        if isinstance(op, CleanUp):
            proc.cleanups.append(op.steps)
            continue
        if isinstance(op, Wait):
            proc.clock.advance(op.seconds)
            continue
        try:
            result = sec.perform(op)
        except Exception as e:
            error = e


def test_a_leader_joining_while_the_old_one_drops_the_claim_loses_once() -> None:
    """Schedule in the module docstring."""
    clock = FakeClock()
    etcd = EtcdModel(clock)
    p, q = Proc("p", etcd, clock), Proc("q", etcd, clock)
    sec = p.section("s")
    turns = sec.known.turns
    turn_key = SectionKeys.of(PREFIX, "s").turn

    a = p.member(Partition(0, 4), 10.0)
    wa = Waiter(a, lambda: None)
    assert sec.gate.join(wa)
    steps_a = core.lead(sec.known, sec.gate, wa, p.config)
    n = 0

    def q_first(op: Op) -> bool:  # q writes before each of A's swaps; stop once A holds
        nonlocal n
        if isinstance(op, Swap):
            n += 1
            q.acquire("s", Partition(10 + n, 11 + n), 10.0)
        return isinstance(op, Wait) and turns.holding

    _until(p, steps_a, q_first)
    assert turns.holding and turn_key in etcd.kvs
    claim = etcd.kvs[turn_key].create_revision

    b = p.member(Partition(4, 8), 10.0)
    wb = Waiter(b, lambda: None)
    steps_b = core.lead(sec.known, sec.gate, wb, p.config)
    b_swap: list[Op] = []
    leaving = turns.leaving

    def b_joins_then_leaving() -> tuple[int, int] | None:
        assert sec.gate.join(wb)  # the gate was idle: B leads at once
        op = _until(p, steps_b, lambda op: isinstance(op, Swap))
        assert op is not None
        b_swap.append(op)
        return leaving()

    turns.leaving = b_joins_then_leaving  # type: ignore[method-assign]
    try:
        drop = steps_a.throw(KeyboardInterrupt())  # A's way out spawns the drop ...
        assert isinstance(drop, CleanUp)
        p.cleanups.append(drop.steps)
        steps_a.send(None)  # ... and lets the interrupt out
        raise AssertionError("A's interrupt was swallowed")
    except KeyboardInterrupt:
        pass
    finally:
        turns.leaving = leaving  # type: ignore[method-assign]
    assert b_swap and isinstance(b_swap[0], Swap) and b_swap[0].turn == claim
    p.run("s", core.give_up(sec.known, sec.gate, wa, p.config))  # A's thread's way out
    for cleanup in p.cleanups:  # the drop of c lands before B's swap
        p.run("s", cleanup)
    p.cleanups.clear()
    assert turn_key not in etcd.kvs

    swaps, zero_pauses_unheld = 1, 0
    result: Any = sec.perform(b_swap[0])
    while True:  # B's lead, to its end (its clean-ups, if any, are not needed here)
        op = _until(p, steps_b, lambda op: isinstance(op, Swap | Wait), result)
        result = None
        if op is None:
            break
        if isinstance(op, Wait):
            zero_pauses_unheld += op.seconds == 0 and not turns.holding
            clock.advance(op.seconds)
            continue
        swaps += 1
        result = sec.perform(op)
    assert b.grant is not None and b.grant.partitions, b.error
    assert swaps <= 2, f"B needed {swaps} swaps"
    assert zero_pauses_unheld == 0
    assert turn_key not in etcd.kvs
