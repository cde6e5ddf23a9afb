"""Releases riding the gate (``lessor.etcd.gate``): who deletes a released marker, and when.

Proven here, through the gate's public methods and the rides' flags and wake calls:

* board: with nobody leading, the ride leads the releases at once; behind an acquisition that
  leads, or a release that leads, it waits aboard;
* take_rides/landed: a Txn takes the rides aboard in boarding order; landing tells each how the
  Txn ended and wakes it;
* the lead of the releases passes on: when the acquisitions' lead ends with rides aboard, and
  when a release's Txn is done (unless an acquisition leads by then: its swap takes them);
* alight: a ride no Txn took leaves and deletes its marker itself; one a Txn took stays for
  its landing; a release leader that alights passes the lead on;
* a state machine (hypothesis) that drives acquisitions and rides as the core does: after any
  sequence, no ride waits aboard with nobody to take it, at most one ride leads the releases,
  and it runs or was woken to run.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from lessor.etcd.gate import Gate, Ride, Waiter
from lessor.etcd.keys import Owner


@dataclass(eq=False)
class Item:
    name: str
    settled: bool = False


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> None:
        self.n += 1


def ride(seq: int) -> tuple[Ride, Counter]:
    woken = Counter()
    return Ride(Owner(1, seq), woken), woken


def acquisition(gate: Gate[Item], name: str) -> Waiter[Item]:
    w = Waiter(Item(name), lambda: None)
    gate.join(w)
    return w


def test_a_ride_with_nobody_leading_leads_the_releases_at_once() -> None:
    gate: Gate[Item] = Gate(lambda i: i.settled)
    r, woken = ride(1)
    gate.board(r)
    assert r.lead and woken.n == 1
    assert gate.take_rides(32) == [r]


def test_behind_a_leading_acquisition_rides_wait_and_its_swap_takes_them_in_order() -> None:
    gate: Gate[Item] = Gate(lambda i: i.settled)
    acquisition(gate, "a")
    (r1, w1), (r2, w2) = ride(1), ride(2)
    gate.board(r1)
    gate.board(r2)
    assert not r1.lead and not r2.lead and w1.n == w2.n == 0
    taken = gate.take_rides(32)
    assert taken == [r1, r2] and r1.taken and r2.taken
    gate.landed(taken, True)
    assert r1.carried is True and r2.carried is True and w1.n == w2.n == 1


def test_when_the_acquisitions_lead_ends_the_first_ride_aboard_leads_the_releases() -> None:
    gate: Gate[Item] = Gate(lambda i: i.settled)
    a = acquisition(gate, "a")
    (r1, w1), (r2, w2) = ride(1), ride(2)
    gate.board(r1)
    gate.board(r2)
    a.item.settled = True
    gate.hand_over(a)
    assert r1.lead and w1.n == 1
    assert not r2.lead and w2.n == 0


def test_a_ride_boarding_while_a_release_leads_waits_for_the_next_txn() -> None:
    gate: Gate[Item] = Gate(lambda i: i.settled)
    (r1, _), (r2, w2) = ride(1), ride(2)
    gate.board(r1)
    taken = gate.take_rides(32)
    gate.board(r2)  # r1's Txn is on its way
    assert not r2.lead and w2.n == 0
    gate.landed(taken, True)
    gate.done_carrying(r1)
    assert r2.lead and w2.n == 1 and not r1.lead


def test_a_release_txn_done_while_an_acquisition_leads_leaves_the_rides_to_its_swap() -> None:
    gate: Gate[Item] = Gate(lambda i: i.settled)
    (r1, _), (r2, w2) = ride(1), ride(2)
    gate.board(r1)
    taken = gate.take_rides(32)
    gate.board(r2)
    acquisition(gate, "a")
    gate.landed(taken, True)
    gate.done_carrying(r1)
    assert not r2.lead and w2.n == 0
    assert gate.take_rides(32) == [r2]


def test_a_failed_txn_tells_its_rides_to_delete_their_markers_themselves() -> None:
    gate: Gate[Item] = Gate(lambda i: i.settled)
    acquisition(gate, "a")
    r, woken = ride(1)
    gate.board(r)
    gate.landed(gate.take_rides(32), False)
    assert r.carried is False and woken.n == 1


def test_take_rides_takes_at_most_the_limit() -> None:
    gate: Gate[Item] = Gate(lambda i: i.settled)
    acquisition(gate, "a")
    rides = [ride(i)[0] for i in range(5)]
    for r in rides:
        gate.board(r)
    assert gate.take_rides(2) == rides[:2]
    assert gate.take_rides(32) == rides[2:]


def test_a_ride_no_txn_took_alights_and_deletes_its_marker_itself() -> None:
    gate: Gate[Item] = Gate(lambda i: i.settled)
    acquisition(gate, "a")
    r, _ = ride(1)
    gate.board(r)
    assert gate.alight(r) is True
    assert r.carried is False
    assert gate.take_rides(32) == []


def test_a_ride_a_txn_took_cannot_alight_and_waits_for_the_landing() -> None:
    gate: Gate[Item] = Gate(lambda i: i.settled)
    acquisition(gate, "a")
    r, _ = ride(1)
    gate.board(r)
    taken = gate.take_rides(32)
    assert gate.alight(r) is False
    assert r.carried is None
    gate.landed(taken, True)
    assert r.carried is True


def test_a_release_leader_that_alights_passes_the_lead_on() -> None:
    gate: Gate[Item] = Gate(lambda i: i.settled)
    (r1, _), (r2, w2) = ride(1), ride(2)
    gate.board(r1)  # leads
    gate.board(r2)
    assert r1.lead and not r2.lead
    assert gate.alight(r1) is True
    assert not r1.lead and r2.lead and w2.n == 1
    assert gate.take_rides(32) == [r2]


def test_the_last_release_leader_alighting_leaves_nobody_leading() -> None:
    gate: Gate[Item] = Gate(lambda i: i.settled)
    r1, _ = ride(1)
    gate.board(r1)
    assert gate.alight(r1) is True
    r2, w2 = ride(2)
    gate.board(r2)
    assert r2.lead and w2.n == 1, "the releases' lead was free again"


# -- any sequence ----------------------------------------------------------------------------


class RideMachine(RuleBasedStateMachine):
    """Acquisitions that lead and hand over (``core.lead``), and releases that board, lead
    the releases, are taken by a swap or by a release's Txn, land, and alight
    (``core.release._ride``, ``_carry``, ``core.attempt._swap``); every rule is a legal move
    of some thread."""

    MAX = 8

    def __init__(self) -> None:
        super().__init__()
        self.gate: Gate[Item] = Gate(lambda i: i.settled)
        self.leader: Waiter[Item] | None = None  # the acquisition that leads, if one does
        self.queued: list[Waiter[Item]] = []
        self.rides: list[tuple[Ride, Counter]] = []
        self.carrying: tuple[Ride, list[Ride]] | None = None  # a release's Txn on its way
        self.swap: list[Ride] | None = None  # the rides the leader's swap on its way took
        self.n = 0

    def waiting(self) -> list[int]:
        return [i for i, (r, _) in enumerate(self.rides) if r.carried is None]

    @precondition(lambda self: self.n < self.MAX)
    @rule()
    def acquire(self) -> None:
        self.n += 1
        w = Waiter(Item(f"a{self.n}"), lambda: None)
        if self.gate.join(w):
            self.leader = w
        else:
            self.queued.append(w)

    @precondition(lambda self: self.leader is not None and self.swap is None)
    @rule(limit=st.integers(1, 3))
    def send_swap(self, limit: int) -> None:
        self.swap = self.gate.take_rides(limit)

    @precondition(lambda self: self.swap is not None)
    @rule(carried=st.booleans())
    def swap_lands(self, carried: bool) -> None:
        assert self.swap is not None
        self.gate.landed(self.swap, carried)
        self.swap = None

    @precondition(lambda self: self.leader is not None and self.swap is None)
    @rule()
    def hand_over(self) -> None:
        assert self.leader is not None
        leader = self.leader
        leader.item.settled = True
        self.gate.hand_over(leader)
        self.leader = None
        if leader.lead:
            raise AssertionError("a leader that handed over still leads")
        for w in self.queued:
            if w.lead:
                self.leader = w
        if self.leader is not None:
            self.queued.remove(self.leader)

    @precondition(lambda self: self.n < self.MAX)
    @rule()
    def board(self) -> None:
        self.n += 1
        woken = Counter()
        r = Ride(Owner(1, self.n), woken)
        self.rides.append((r, woken))
        self.gate.board(r)

    @precondition(lambda self: self.carrying is None and any(
        r.lead for r, _ in self.rides))  # fmt: skip
    @rule(limit=st.integers(1, 3))
    def lead_releases(self, limit: int) -> None:
        leader = next(r for r, _ in self.rides if r.lead)
        self.carrying = (leader, self.gate.take_rides(limit))

    @precondition(lambda self: self.carrying is not None)
    @rule(carried=st.booleans())
    def release_txn_lands(self, carried: bool) -> None:
        assert self.carrying is not None
        leader, taken = self.carrying
        self.gate.landed(taken, carried)
        self.gate.done_carrying(leader)
        self.carrying = None

    @precondition(lambda self: bool(self.waiting()))
    @rule(data=st.data())
    def alight(self, data: st.DataObject) -> None:
        i = data.draw(st.sampled_from(self.waiting()))
        r, _ = self.rides[i]
        if self.carrying is not None and self.carrying[0] is r:
            return  # a release leader alights after its Txn ended (_carry's finally first)
        taken = r.taken
        assert self.gate.alight(r) == (not taken)
        if not taken:
            assert r.carried is False and not r.lead

    @rule()
    def nothing_happens(self) -> None:
        """Every thread waits (so that a sequence can always go on)."""

    @invariant()
    def no_ride_waits_aboard_with_nobody_to_take_it(self) -> None:
        aboard = [r for r, _ in self.rides if r.carried is None and not r.taken]
        leads = [r for r, _ in self.rides if r.lead]
        assert len(leads) <= 1, "two rides lead the releases"
        if aboard:
            assert self.leader is not None or leads, "rides aboard, nobody to take them"
        for r in leads:
            w = r.wake
            assert isinstance(w, Counter) and w.n > 0, "leads the releases, never woken"

    @invariant()
    def a_landed_ride_was_woken(self) -> None:
        for r, w in self.rides:
            if r.taken and r.carried is not None:
                assert w.n > 0


TestRideMachine = RideMachine.TestCase
TestRideMachine.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
