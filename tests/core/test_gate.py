"""The gate (``lessor.etcd.gate``): who leads a section's acquisitions, and every way out.

Proven here, through the gate's public methods and the waiters' flags and wake calls:

* join: the first waiter leads at once, later ones queue behind it;
* take/finish: the leader takes the first waiters in arrival order (itself first); finishing
  wakes the settled, puts the unsettled back at the front in their order, and returns the
  departed for the leader to settle;
* withdraw: only a queued waiter can be withdrawn; one just handed the lead passes it on;
* leave: queued, the waiter is out and the lead passes on; inside an attempt, it is departed
  and ``leave`` says False; a second leave says False;
* hand_over: the next queued waiter leads (and is woken), or nobody leads when none waits;
* regressions: a waiter that leaves inside another's attempt is never handed the lead; a
  leader that leaves (inside its attempt or between attempts) passes the lead on;
* a state machine (hypothesis) that drives the gate as the core and the threaded shell do:
  after any sequence of operations the queue is in the order the model expects, and a gate with
  waiters has exactly one leader, which is running or has been woken to run.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from lessor.etcd.gate import Gate, Waiter


@dataclass(eq=False)
class Item:
    name: str
    settled: bool = False


class Line:
    """A gate and its waiters, each recording how often it was woken."""

    def __init__(self) -> None:
        self.gate: Gate[Item] = Gate(lambda item: item.settled)
        self.wakes: dict[str, int] = {}

    def waiter(self, name: str) -> Waiter[Item]:
        self.wakes[name] = 0
        return Waiter(Item(name), lambda: self.wakes.__setitem__(name, self.wakes[name] + 1))

    def join(self, *names: str) -> list[Waiter[Item]]:
        waiters = [self.waiter(n) for n in names]
        for w in waiters:
            self.gate.join(w)
        return waiters


def names(waiters: list[Waiter[Item]]) -> list[str]:
    return [w.item.name for w in waiters]


# -- join, take, finish ----------------------------------------------------------------------


def test_the_first_to_join_leads_and_the_rest_queue() -> None:
    line = Line()
    a, b = line.waiter("a"), line.waiter("b")
    assert line.gate.join(a) is True and a.lead
    assert line.gate.join(b) is False and not b.lead
    assert line.gate.leading and line.gate.queued == 2
    assert line.wakes == {"a": 0, "b": 0}  # joining wakes nobody: the leader runs already


def test_take_is_in_arrival_order_leader_first() -> None:
    line = Line()
    a, b, c = line.join("a", "b", "c")
    batch = line.gate.take(2)
    assert batch == [a, b]
    assert a.in_attempt and b.in_attempt and not c.in_attempt
    assert line.gate.queued == 1


def test_finish_wakes_the_settled_and_puts_the_rest_back_in_front_in_order() -> None:
    line = Line()
    a, b, c, _d = line.join("a", "b", "c", "d")
    batch = line.gate.take(3)  # a (leader), b, c
    line.join("e")  # arrives during the attempt
    b.item.settled = True
    assert line.gate.finish(batch) == []
    assert line.wakes == {"a": 0, "b": 1, "c": 0, "d": 0, "e": 0}  # the leader is not woken
    assert not any(w.in_attempt for w in (a, b, c))
    assert names(line.gate.take(10)) == ["a", "c", "d", "e"]


def test_finish_returns_the_departed_and_neither_wakes_nor_requeues_them() -> None:
    line = Line()
    a, b, c = line.join("a", "b", "c")
    batch = line.gate.take(3)
    assert line.gate.leave(b) is False  # inside the attempt
    assert line.gate.leave(c) is False
    c.item.settled = True  # settled by the attempt, but its thread has gone
    assert line.gate.finish(batch) == [b, c]
    assert line.wakes["b"] == line.wakes["c"] == 0
    assert line.gate.queued == 1 and line.gate.take(10) == [a]


# -- withdraw ----------------------------------------------------------------------------------


def test_withdraw_takes_a_queued_waiter_out() -> None:
    line = Line()
    a, b, c = line.join("a", "b", "c")
    assert line.gate.withdraw(b) is True
    assert line.gate.take(10) == [a, c]
    assert a.lead and line.wakes == {"a": 0, "b": 0, "c": 0}


def test_withdraw_refuses_a_waiter_inside_an_attempt_settled_or_already_out() -> None:
    line = Line()
    _a, b, c = line.join("a", "b", "c")
    batch = line.gate.take(2)
    assert line.gate.withdraw(b) is False  # inside the attempt
    b.item.settled = True
    line.gate.finish(batch)
    assert line.gate.withdraw(b) is False  # settled: out of the queue
    assert line.gate.withdraw(c) is True
    assert line.gate.withdraw(c) is False  # already out
    assert line.gate.queued == 1  # a, back after its unsettled attempt


def test_withdrawing_a_waiter_just_handed_the_lead_passes_it_on() -> None:
    line = Line()
    a, b, c = line.join("a", "b", "c")
    a.item.settled = True
    line.gate.finish(line.gate.take(1))
    line.gate.hand_over(a)
    assert b.lead and line.wakes["b"] == 1  # handed the lead, its thread not yet running
    assert line.gate.withdraw(b) is True  # ... and its time ran out meanwhile
    assert not b.lead and c.lead and line.wakes["c"] == 1
    assert line.gate.leading and line.gate.take(10) == [c]


def test_withdrawing_the_last_waiter_handed_the_lead_leaves_no_leader() -> None:
    line = Line()
    a, b = line.join("a", "b")
    a.item.settled = True
    line.gate.finish(line.gate.take(1))
    line.gate.hand_over(a)
    assert line.gate.withdraw(b) is True
    assert not line.gate.leading and line.gate.queued == 0


# -- leave -----------------------------------------------------------------------------------


def test_leave_while_queued_takes_the_waiter_out() -> None:
    line = Line()
    a, b, c = line.join("a", "b", "c")
    assert line.gate.leave(b) is True and b.departed
    assert line.gate.take(10) == [a, c] and a.lead


def test_leave_inside_an_attempt_says_false_and_finish_hands_it_to_the_leader() -> None:
    line = Line()
    _a, b = line.join("a", "b")
    batch = line.gate.take(2)
    assert line.gate.leave(b) is False and b.departed
    assert line.gate.finish(batch) == [b]


def test_leave_twice_says_false() -> None:
    line = Line()
    _a, b = line.join("a", "b")
    assert line.gate.leave(b) is True
    assert line.gate.leave(b) is False


def test_leave_after_being_settled_says_true_and_changes_nothing() -> None:
    """A settled waiter that an exception reaches before it returns ends its own grant."""
    line = Line()
    a, b = line.join("a", "b")
    batch = line.gate.take(2)
    b.item.settled = True
    line.gate.finish(batch)
    assert line.gate.leave(b) is True
    assert a.lead and line.gate.take(10) == [a]


# -- hand_over -------------------------------------------------------------------------------


def test_hand_over_wakes_the_next_queued_waiter_to_lead() -> None:
    line = Line()
    a, b, c = line.join("a", "b", "c")
    batch = line.gate.take(1)
    a.item.settled = True
    line.gate.finish(batch)
    line.gate.hand_over(a)
    assert not a.lead and b.lead and not c.lead
    assert line.wakes == {"a": 0, "b": 1, "c": 0}
    assert line.gate.take(10) == [b, c]


def test_hand_over_with_nobody_waiting_leaves_no_leader() -> None:
    line = Line()
    (a,) = line.join("a")
    a.item.settled = True
    line.gate.finish(line.gate.take(1))
    line.gate.hand_over(a)
    assert not line.gate.leading and not a.lead
    b = line.waiter("b")
    assert line.gate.join(b) is True  # the next to come leads at once


def test_hand_over_by_a_leader_still_queued_removes_it() -> None:
    """A leader that gives up between attempts (its thread interrupted while it paused)."""
    line = Line()
    a, b = line.join("a", "b")
    line.gate.finish(line.gate.take(2))  # nobody settled: a and b back in front
    line.gate.hand_over(a)
    assert b.lead and line.gate.take(10) == [b]


# -- regressions -----------------------------------------------------------------------------


def test_a_waiter_that_left_inside_anothers_attempt_is_never_handed_the_lead() -> None:
    line = Line()
    a, b, c = line.join("a", "b", "c")
    batch = line.gate.take(2)  # a leads an attempt for a and b; c waits
    assert line.gate.leave(b) is False
    a.item.settled = True
    assert line.gate.finish(batch) == [b]
    line.gate.hand_over(a)
    assert not b.lead and line.wakes["b"] == 0
    assert c.lead and line.wakes["c"] == 1


def test_a_departed_waiter_is_not_handed_the_lead_after_a_later_attempt() -> None:
    line = Line()
    a, b = line.join("a", "b")
    batch = line.gate.take(2)
    line.gate.leave(b)
    line.gate.finish(batch)  # a not settled: back in the queue, b departed
    a.item.settled = True
    line.gate.finish(line.gate.take(10))
    line.gate.hand_over(a)
    assert not b.lead and not line.gate.leading and line.wakes["b"] == 0


def test_a_leader_that_leaves_inside_its_attempt_passes_the_lead_on() -> None:
    """As ``core.lead`` does when an exception reaches the leader: leave, finish, hand over."""
    line = Line()
    a, b, c = line.join("a", "b", "c")
    batch = line.gate.take(2)
    assert line.gate.leave(a) is False
    assert line.gate.finish(batch) == [a]
    line.gate.hand_over(a)
    assert not a.lead and b.lead and line.wakes["b"] == 1
    assert line.gate.take(10) == [b, c]


def test_a_leader_that_leaves_between_attempts_passes_the_lead_on() -> None:
    line = Line()
    a, b = line.join("a", "b")
    line.gate.finish(line.gate.take(2))  # unsettled: back in the queue, a still leads
    assert line.gate.leave(a) is True
    assert b.lead and line.wakes["b"] == 1
    line.gate.hand_over(a)  # core.lead's finally: changes nothing now
    assert b.lead and line.gate.take(10) == [b]


# -- any sequence ----------------------------------------------------------------------------


class GateMachine(RuleBasedStateMachine):
    """Drives one gate as ``core.lead`` (the leader's thread) and ``EtcdLessor._wait_turn`` /
    ``core.withdraw`` / ``core.give_up`` (the other threads) do, keeping the queue the gate
    should hold; every rule is a legal move of some thread."""

    MAX_WAITERS = 7

    def __init__(self) -> None:
        super().__init__()
        self.line = Line()
        self.waiters: list[Waiter[Item]] = []
        self.queue: list[Waiter[Item]] = []  # what the gate's queue must be
        self.leader: Waiter[Item] | None = None  # whose thread runs core.lead
        self.batch: list[Waiter[Item]] | None = None  # the leader's attempt in progress
        self.gone: set[str] = set()  # threads that have returned or left
        self.seen_wakes: dict[str, int] = {}

    def alive(self) -> list[Waiter[Item]]:
        return [w for w in self.waiters if w.item.name not in self.gone]

    def woken(self, w: Waiter[Item]) -> bool:
        name = w.item.name
        return self.line.wakes[name] > self.seen_wakes.get(name, 0)

    def asleep(self) -> list[Waiter[Item]]:
        """Threads waiting for their turn (the leader's thread is not one of them)."""
        return [w for w in self.alive() if w is not self.leader]

    @precondition(lambda self: len(self.waiters) < self.MAX_WAITERS)
    @rule()
    def join(self) -> None:
        w = self.line.waiter(f"w{len(self.waiters)}")
        self.waiters.append(w)
        leads = self.line.gate.join(w)
        expected = not any(x.lead for x in self.waiters if x is not w)
        assert leads == expected
        self.queue.append(w)
        if leads:
            self.leader = w

    @precondition(lambda self: self.leader is not None and self.batch is None)
    @rule(limit=st.integers(1, 4))
    def take(self, limit: int) -> None:
        batch = self.line.gate.take(limit)
        assert batch == self.queue[:limit]
        assert batch[0] is self.leader, "the leader takes itself first"
        self.queue = self.queue[limit:]
        self.batch = batch

    @precondition(lambda self: self.batch is not None)
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        assert self.batch is not None and self.leader is not None
        batch, leader = self.batch, self.leader
        for w in batch:
            if data.draw(st.booleans(), label=f"settle {w.item.name}"):
                w.item.settled = True
        wakes = dict(self.line.wakes)
        departed = self.line.gate.finish(batch)
        assert departed == [w for w in batch if w.departed]
        back = [w for w in batch if not w.departed and not w.item.settled]
        self.queue[:0] = back
        for w in batch:
            woke = self.line.wakes[w.item.name] > wakes[w.item.name]
            assert woke == (w.item.settled and not w.departed and w is not leader)
        self.batch = None
        if leader.departed or leader.item.settled:  # core.lead returns or raises
            self.hand_over(leader)

    def hand_over(self, leader: Waiter[Item]) -> None:
        self.line.gate.hand_over(leader)
        self.gone.add(leader.item.name)
        self.leader = None
        if leader in self.queue:
            self.queue.remove(leader)
        assert not leader.lead

    @precondition(lambda self: any(self.woken(w) for w in self.asleep()))
    @rule(data=st.data())
    def wake(self, data: st.DataObject) -> None:
        """A woken thread runs: it leads (``_wait_turn`` True) or returns its settled grant."""
        w = data.draw(st.sampled_from([w for w in self.asleep() if self.woken(w)]))
        self.seen_wakes[w.item.name] = self.line.wakes[w.item.name]
        if w.lead:
            assert self.leader is None, "two leaders"
            assert not w.item.settled and w in self.queue
            self.leader = w
        else:
            assert w.item.settled, "woken, neither settled nor leading"
            self.gone.add(w.item.name)

    @precondition(lambda self: bool(self.asleep()))
    @rule(data=st.data())
    def withdraw(self, data: st.DataObject) -> None:
        """A waiting thread's time is up (it may have been woken meanwhile)."""
        w = data.draw(st.sampled_from(self.asleep()))
        expected = w in self.queue
        assert self.line.gate.withdraw(w) == expected
        if expected:
            self.queue.remove(w)
            self.gone.add(w.item.name)
            assert not w.lead

    @precondition(lambda self: bool(self.waiters))
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        """An exception reaches a thread (``core.give_up``; for the leader, ``core.lead``
        first), or a thread that already left is asked again."""
        w = data.draw(st.sampled_from(self.waiters))
        if w.item.name in self.gone:
            if w.departed:
                assert self.line.gate.leave(w) is False
            return
        in_attempt = self.batch is not None and w in self.batch
        if w is self.leader and not in_attempt:
            self.hand_over(w)  # core.lead's finally runs before core.give_up
        result = self.line.gate.leave(w)
        assert w.departed and result == (not in_attempt)
        if w in self.queue:
            self.queue.remove(w)
        if w is not self.leader:  # the leader's thread goes on to finish its attempt
            self.gone.add(w.item.name)

    @invariant()
    def queue_as_expected(self) -> None:
        assert self.line.gate.queued == len(self.queue)
        for w in self.waiters:
            assert w.in_attempt == (self.batch is not None and w in self.batch)

    @invariant()
    def a_gate_with_waiters_has_one_leader_that_can_run(self) -> None:
        gate = self.line.gate
        leads = [w for w in self.waiters if w.lead]
        if self.queue or self.batch:
            assert gate.leading
        assert gate.leading == bool(leads) and len(leads) <= 1
        for w in leads:
            assert w is self.leader or (self.woken(w) and w in self.queue), (
                f"{w.item.name} leads, but its thread neither runs nor was woken"
            )
            if w is not self.leader:
                assert not w.departed, "a departed waiter was handed the lead"


TestGateMachine = GateMachine.TestCase
TestGateMachine.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
