"""Releases ride, second adversarial review (of hot-fold at 0bd9314, the fixes of the first):
schedules run against the real :class:`~lessor.etcd.gate.Gate` and ``release.py``'s own
``_ride`` loop, on a clock the test moves. No etcd: a Txn is a callback.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from lessor import Partition
from lessor.etcd import core
from lessor.etcd.gate import Gate, Ride, Waiter
from lessor.etcd.keys import Owner
from lessor.etcd.ops import CleanUp, DeleteMarker, DeleteMarkers, RetireLease, WaitTurn
from lessor.etcd.transport import RetryableRpc
from tests.support.driver import Proc, live_entries
from tests.support.etcd_model import EtcdModel, FakeClock

release_module = importlib.import_module("lessor.etcd.core.release")


@dataclass(eq=False)
class Item:
    settled: bool = False


@dataclass(frozen=True)
class FakeHeld:
    owner: Owner


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _step_ride(gen: Any, clock: Clock, early: float = 0.0) -> Any:
    """Run a ``_ride`` generator to its end: a WaitTurn moves the clock by its seconds less
    ``early`` (nobody wakes the ride; a timer may fire a little early), a DeleteMarkers
    succeeds."""
    value: Any = None
    try:
        while True:
            op = gen.send(value)
            value = None
            if isinstance(op, WaitTurn):
                clock.now += max(1e-6, op.seconds - early)  # a real wait of ~0 still takes time
            elif isinstance(op, DeleteMarkers):
                pass
            else:
                raise AssertionError(op)
    except StopIteration as stop:
        return stop.value


def test_a_release_timeout_below_ride_wait_leaves_the_ride_aboard_and_hands_it_the_lead() -> None:
    """Schedule (``release_timeout`` 0.005 s, which the options accept: any positive float):

    1. an acquisition leads section s's gate (its swap is in flight);
    2. release a boards: it waits until ``taken_by`` (RIDE_WAIT, 0.01 s) to be taken, and
       until ``landed_by`` (one call's time: min(rpc_timeout, release_timeout) = 0.005 s) for
       the reply, but ``landed_by`` comes first;
    3. a's ``WaitTurn`` (until ``taken_by``) ends 1 us early (asyncio runs a timer up to its
       clock resolution early; any early wake-up does), so at 0.009999 s ``_ride`` returns
       "failed" ("taken, and no word yet") without alighting:
       a was never taken, and stays aboard the gate, although its thread has gone on
       (to RetireLease, counted as a failed try, and its own deletion);
    4. the acquisition hands over with nobody queued: the gate hands the lead of the releases
       to a, whose thread has left. Every later release on s waits its RIDE_WAIT aboard,
       then deletes its marker itself: riding is dead for the section (and the next swap
       carries a's stale marker along).

    Fixed: ``landed_by`` is at least ``taken_by``, and only a ride that a Txn took gives up
    waiting for its reply; an untaken one alights at ``taken_by`` and returns "no"."""
    clock = Clock()
    gate: Gate[Item] = Gate(lambda item: item.settled)
    leader = Waiter(Item(), lambda: None)
    assert gate.join(leader)
    config = core.Config(holder="t", rpc_timeout=1.0, release_timeout=0.005, clock=clock)
    woken: list[str] = []
    boarding = core.Boarding(gate, None, lambda: woken.append("a"), lambda: None)
    ride = release_module._ride(FakeHeld(Owner(1, 1)), boarding, config)
    ridden = _step_ride(ride, clock, early=1e-6)
    assert ridden == "no"
    left = [r.owner for r in gate._aboard]
    gate.hand_over(leader)
    lead = gate._releasing
    assert left == [] and lead is None, (
        f"a's thread left its ride ({ridden!r}), and the gate still has it aboard: {left}; "
        f"leading the releases: {lead.owner if lead else None}"
    )


def test_a_ride_whose_txn_hangs_leaves_its_own_deletion_a_call_of_no_time() -> None:
    """Schedule (one endpoint, ``rpc_timeout`` = ``release_timeout`` = 1 s, the driver's
    config; the same with any ``rpc_timeout`` >= ``release_timeout``):

    1. a holds [0, 4) of s and releases, nobody else acquiring: a leads the releases;
    2. its ``DeleteMarkers`` hangs (the member runs it to its timeout, ``call_timeout`` of the
       whole release timeout: 1 s), then fails as unknown: "failed";
    3. ``_end_marker`` retires the lease and calls ``_delete_marker`` with ``give_up_at`` =
       began + release_timeout, which is now: its one try is a ``DeleteMarker`` with a
       timeout of 0 s, which gRPC fails at once with DEADLINE_EXCEEDED without sending it;
       the tries end, and the error ``release`` raises (when the lease is not revoked with
       it) names that doomed call, not the ride's Txn that hung.

    So after a ride's Txn that hung, the release never really tries on its own, whatever the
    other members: with two endpoints the ride's Txn gets half the time and one real try is
    left; with one, none. Fix idea: ``_delete_marker`` skips a try with less than
    MIN_CALL_TIME left (and returns the ride's own failure, which ``_ride`` would then have to
    return instead of "failed"), or the ride's wait (``landed_by``, the ``_carry`` Txn's
    timeout) is the *first try* of ``call_timeout``'s fail-over and the own deletion the
    second (halve it like ``call_timeout`` does with several endpoints)."""
    clock = FakeClock()
    etcd = EtcdModel(clock)
    p = Proc("p", etcd, clock)
    m = p.acquire("s", Partition(0, 4), 5.0)
    assert m.grant is not None and isinstance(m.grant.handle, core.Held)
    held = m.grant.handle
    section = p.section("s")
    handlers = section._handlers
    saved = dict(handlers)
    tries: list[float] = []

    def hung(op: Any) -> Any:
        clock.advance(op.timeout)
        raise RetryableRpc("model", grpc.StatusCode.DEADLINE_EXCEEDED, "hung member (model)")

    def own(op: Any) -> Any:
        tries.append(op.timeout)
        return saved[DeleteMarker](op)

    handlers[DeleteMarkers] = hung
    handlers[DeleteMarker] = own
    turn = threading.Event()
    try:
        section.drive(
            core.release(held, p.config, core.Boarding(section.gate, turn, turn.set, turn.clear))
        )
    finally:
        handlers.clear()
        handlers.update(saved)
    assert tries and min(tries) > 0, (
        f"after the ride's Txn hung, the release's own deletions had timeouts {tries}: "
        "a call of 0 s fails at once, unsent"
    )


def test_a_leader_interrupted_in_its_pause_leaves_the_gate_pausing_for_the_next() -> None:
    """Schedule (gate only; ``lead``'s own calls, in its order):

    1. acquisition A leads s's gate; acquisition B queues during A's attempt;
    2. A's attempt lost: ``lead`` calls ``gate.pausing()`` and yields its ``Wait``;
    3. an exception reaches A's thread in the ``Wait`` (its context cancelled, a Ctrl-C, or the
       generator closed: GeneratorExit): ``gate.resumed()`` is skipped, and ``lead``'s
       ``finally`` hands the lead to B (``hand_over``), which leaves ``_pausing`` set (only
       the lead's end with nobody queued resets it);
    4. B leads and sends swaps, not pausing; release a boards.

    a is made leader of the releases at once and sends its own Txn of deletions beside B's
    next swap, which would have carried it: the gate believes B pauses until B itself
    pauses and resumes. Harmless to correctness (the two Txns take disjoint rides) but the
    riding is lost for as long as B leads without pausing. Fix idea: ``_pass_lead`` resets
    ``_pausing`` whenever the lead passes (the new leader has not paused), or ``lead`` calls
    ``gate.resumed()`` in a ``finally`` around its ``Wait``."""
    gate: Gate[Item] = Gate(lambda item: item.settled)
    a_waiter = Waiter(Item(), lambda: None)
    b_waiter = Waiter(Item(), lambda: None)
    assert gate.join(a_waiter)
    batch = gate.take(32)
    assert not gate.join(b_waiter)  # during A's attempt
    gate.finish(batch)  # lost: A is not settled and goes back to the front
    gate.pausing()
    # The Wait raises: no resumed(); lead's finally hands over.
    gate.hand_over(a_waiter)
    assert b_waiter.lead and gate.leading
    ride = Ride(Owner(1, 1), lambda: None)
    gate.board(ride)
    assert not ride.lead, (
        "B leads and has not paused, yet the gate made release a lead the releases: "
        "A's pause outlived A's lead"
    )


class Interrupt(BaseException):
    """Stands for a KeyboardInterrupt (a signal handler's exception) reaching the thread."""


@pytest.mark.parametrize("ride", [False, True], ids=["main's path (no ride)", "ride"])
def test_a_second_interrupt_after_one_at_the_retirement_leaves_the_lease_unretired(
    ride: bool,
) -> None:
    """Schedule (review 1's double Ctrl-C, one step later):

    1. a holds [0, 4) of s on the shared etcd lease and releases, nobody else acquiring;
    2. its deletion fails as unknown (UNAVAILABLE): with a ride, a's ``DeleteMarkers`` as
       leader of the releases ("failed"); on main's path, its ``DeleteMarker``;
    3. the first interrupt reaches a's thread at the ``RetireLease`` yielded for it (in
       ``_end_marker``; on main's path in ``_delete_marker``), before the shell starts it:
       the lease's ``retired`` flag is never set;
    4. ``release`` yields its ``CleanUp`` and the second interrupt arrives before it starts;
    5. the process goes on acquiring another section for 15 s, renewing its shared lease.

    The marker may still be there (the deletion's outcome was unknown; here it never
    happened), and nothing retired the lease: renewals keep a's released ranges held.
    Both cases fail: the window is main's own (``_delete_marker``'s ``RetireLease`` yield),
    and fix (2) of review 1 copied it into ``_end_marker``. Fix idea: set
    ``held.lease.retired = True`` directly before yielding ``RetireLease``
    (as ``_ride``'s and ``_delete_marker``'s exception paths do), in both places."""
    clock = FakeClock()
    etcd = EtcdModel(clock)
    p = Proc("p", etcd, clock)
    m = p.acquire("s", Partition(0, 4), 5.0)
    assert m.grant is not None and isinstance(m.grant.handle, core.Held)
    held = m.grant.handle
    section = p.section("s")
    handlers = section._handlers
    saved = dict(handlers)
    fired: list[type] = []

    def unavailable(op: Any) -> Any:
        fired.append(type(op))
        raise RetryableRpc("model", grpc.StatusCode.UNAVAILABLE, "member down (model)")

    def interrupt(op: Any) -> Any:
        fired.append(type(op))
        raise Interrupt()

    handlers[DeleteMarkers if ride else DeleteMarker] = unavailable
    handlers[RetireLease] = interrupt
    handlers[CleanUp] = interrupt
    turn = threading.Event()
    boarding = core.Boarding(section.gate, turn, turn.set, turn.clear) if ride else None
    try:
        with pytest.raises(Interrupt):
            section.drive(core.release(held, p.config, boarding))
    finally:
        handlers.clear()
        handlers.update(saved)
    assert fired[-2:] == [RetireLease, CleanUp], fired
    for i in range(15):  # past a's deadline (5 s) and the lease's TTL
        clock.advance(1.0)
        etcd.expire()
        other = p.acquire("other", Partition(100 + i, 101 + i), 5.0)
        assert other.grant is not None and isinstance(other.grant.handle, core.Held)
        p.run("other", core.release(other.grant.handle, p.config))
    seqs = [e.seq for e in live_entries(etcd, "s")]
    assert m.seq not in seqs, (
        f"15 s on, a's released entry is still live on a lease renewed all along "
        f"(retired: {held.lease.retired})"
    )


@dataclass
class FakeLease:
    retired: bool = False


@dataclass(frozen=True)
class LeasedHeld:
    owner: Owner
    lease: FakeLease


def test_an_interrupted_leader_of_the_releases_passes_the_lead_once() -> None:
    """Holds. Schedule: a boards with nobody leading and leads the releases: its
    ``DeleteMarkers`` carries its own marker; b boards meanwhile; the interrupt is thrown into
    a's Txn. ``_carry``'s ``finally`` tells a's ride it failed and passes the lead to b;
    ``_ride``'s ``alight`` and its ``finally`` (``done_carrying`` when still leading) find a
    leading no more: b is woken once, the only leader of the releases, and a's lease is
    retired (a Txn of unknown outcome)."""
    gate: Gate[Item] = Gate(lambda item: item.settled)
    woken: list[str] = []
    config = core.Config(holder="t", rpc_timeout=1.0, release_timeout=1.0, clock=Clock())
    held = LeasedHeld(Owner(1, 1), FakeLease())
    a = release_module._ride(
        held, core.Boarding(gate, None, lambda: woken.append("a"), lambda: None), config
    )
    op = next(a)  # a boards, leads, and sends its DeleteMarkers at once
    assert isinstance(op, DeleteMarkers) and op.owners == (Owner(1, 1),)
    b = Ride(Owner(1, 2), lambda: woken.append("b"))
    gate.board(b)
    assert not b.lead  # a leads the releases
    with pytest.raises(Interrupt):
        a.throw(Interrupt())
    assert gate._releasing is b and b.lead and woken.count("b") == 1, woken
    assert held.lease.retired
    assert gate._aboard == [b]
