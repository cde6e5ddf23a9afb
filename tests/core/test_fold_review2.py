"""Releases ride, second adversarial review (of hot-fold at 0bd9314, the fixes of the first):
schedules run against the real :class:`~lessor.etcd.gate.Gate` and ``release.py``'s own
``_ride`` loop, on a clock the test moves. No etcd: a Txn is a callback.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from lessor.etcd import core
from lessor.etcd.gate import Gate, Waiter
from lessor.etcd.keys import Owner
from lessor.etcd.ops import DeleteMarkers, WaitTurn

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
                clock.now += max(0.0, op.seconds - early)
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

    Fix idea: in ``_ride``, ``landed_by`` at least ``taken_by`` (or test ``now >= landed_by``
    only for a ride that ``ride.taken``; an untaken one alights at ``taken_by`` and returns
    "no", not "failed")."""
    clock = Clock()
    gate: Gate[Item] = Gate(lambda item: item.settled)
    leader = Waiter(Item(), lambda: None)
    assert gate.join(leader)
    config = core.Config(holder="t", rpc_timeout=1.0, release_timeout=0.005, clock=clock)
    woken: list[str] = []
    boarding = core.Boarding(gate, None, lambda: woken.append("a"), lambda: None)
    ride = release_module._ride(FakeHeld(Owner(1, 1)), boarding, config)
    ridden = _step_ride(ride, clock, early=1e-6)
    assert ridden == "failed"
    left = [r.owner for r in gate._aboard]
    gate.hand_over(leader)
    lead = gate._releasing
    assert left == [] and lead is None, (
        f"a's thread left its ride ({ridden!r}), and the gate still has it aboard: {left}; "
        f"leading the releases: {lead.owner if lead else None}"
    )
