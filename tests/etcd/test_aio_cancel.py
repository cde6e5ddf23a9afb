"""A task cancelled mid-acquisition, at every await point, leaves nothing held in etcd (issue 13).

The lessor under test is an :class:`~lessor.etcd.AsyncEtcdLessor` whose calls to etcd pass
gates (:class:`tests.support.aio_gates.GatedLessor`). One uncancelled run of an acquisition
lists its await points: before and after each of its calls and waits. Then, for each point, a
fresh run of the same acquisition is held there and its task cancelled: at a BEFORE point the
call has not been sent; at an AFTER point etcd has applied it and its reply is not yet
delivered (in flight). Each time:

* :class:`asyncio.CancelledError` comes out of the task;
* once the lessor's clean-ups have run (etcd is read until nothing of the holder is live, at
  most :data:`CLEAN_UP` seconds), nothing is held, as read straight from etcd
  (:class:`tests.support.stored.Stored`: a live entry is one whose marker exists and is not a
  tombstone), and another holder's entry is untouched;
* ``aclose()`` shuts the lessor down (its transport closes): the acquisition no longer counts
  as in use.

The acquisition is run in five states (:data:`SCENARIOS`): a fresh lessor and section (a read,
an etcd lease granted, a swap); a warm one (state cached, an etcd lease at hand: one swap); a
warm one whose etcd lease must be renewed first (a keep-alive, a swap); a contended one
(another lessor took part of the range after our state was cached, so the first swap fails
and brings the fresh state back); and one whose swap commits but whose reply is lost (the next
attempt adopts the entry). And a
task cancelled while it waits at its section's gate behind a leader, or the leader cancelled
while a task waits behind it.

The waits between two calls (a pause between two attempts, a queued acquisition's turn) pass
the gates too (``GatedLessor``): a task held at a wait's BEFORE point is cancelled as it
waits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack, closing
from dataclasses import dataclass, field
from typing import Any

import pytest

from lessor import Lease, Partition
from lessor.etcd import AsyncEtcdLessor
from lessor.testing import LocalEtcd
from tests.support.aio_gates import AFTER, BEFORE, GatedLessor, Gates, Point
from tests.support.stored import Stored

P = Partition
HOLDER = "cancelled"  # the lessor under test's holder label
OTHER = "other"
PART = P(0, 100)
OTHERS = P(40, 60)  # what the other holder has in the contended case
CLEAN_UP = 3.0  # a clean-up's bound (2 x release_timeout) and some room
TTL = 10  # the etcd lease's, ceil(dur + margin): no entry dies by it while a case runs
MARGIN = 0.2  # the lessor's default


def dur(slack: float) -> float:
    """The duration whose etcd lease (:data:`TTL` s) outlives its deadline by ``slack`` s, so
    that the next acquisition of that duration shares it as it is if asked for within
    ``slack`` s of its grant, and renews it first if asked for later. (It asks for a lease of
    ``TTL`` s too, as long as it takes it within ``1 - slack`` s of its start; after that it
    would need a shorter lease, and take a new one.)"""
    return TTL - MARGIN - slack


DUR = dur(0.5)  # the next acquisition, a few ms later, shares the lease without renewing it
RENEWING = dur(0.0001)  # the next acquisition renews the lease first


def _first_txn(point: Point) -> bool:
    return point.call == "kv.Txn"


@dataclass(frozen=True)
class Scenario:
    """The state an acquisition of :data:`PART` starts from, and what it is granted."""

    name: str
    warm: bool = False  # the lessor acquired in the section once before
    contended: bool = False  # then another holder took OTHERS
    lose: Callable[[Point], bool] | None = None  # the call whose reply is lost
    granted: list[Partition] = field(default_factory=lambda: [PART])
    dur: float = DUR  # of each acquisition of the lessor under test


SCENARIOS = [
    Scenario("fresh"),
    Scenario("warm", warm=True),
    Scenario("renewing", warm=True, dur=RENEWING),
    Scenario("contended", warm=True, contended=True, granted=[P(0, 40), P(60, 100)]),
    Scenario("lost-reply", warm=True, lose=_first_txn),
]


def run(main: Coroutine[Any, Any, None]) -> None:
    asyncio.run(main)


class Case:
    """One run of a scenario in a section of its own: the lessor under test, prepared, and
    the other holder when contended; :meth:`close` ends both."""

    def __init__(self, scenario: Scenario, endpoints: list[str], prefix: str, section: str):
        self.scenario = scenario
        self.section = section
        self.lessor = GatedLessor(endpoints, prefix=prefix, holder=HOLDER)
        self.other = AsyncEtcdLessor(endpoints, prefix=prefix, holder=OTHER)
        self._stack = AsyncExitStack()

    async def prepare(self) -> None:
        if self.scenario.warm:
            async with self.lessor.lease(self.section, PART, self.scenario.dur) as lease:
                assert lease.partitions == [PART]
        if self.scenario.contended:  # held until close(); after our state was cached
            lease = await self._stack.enter_async_context(
                self.other.lease(self.section, OTHERS, 60.0)
            )
            assert lease.partitions == [OTHERS]

    def gates(self, hold_at: int | None = None) -> Gates:
        """New gates for the lessor's calls from now on."""
        gates = Gates(hold_at, lose=self.scenario.lose)
        self.lessor.gated.gates = gates
        return gates

    def others(self) -> dict[str, list[Partition]]:
        return {OTHER: [OTHERS]} if self.scenario.contended else {}

    async def close(self) -> None:
        try:
            await self._stack.aclose()
        finally:
            await self.other.aclose()
            await self.lessor.aclose()


async def acquire(lessor: AsyncEtcdLessor, section: str, part: Partition, dur: float) -> Lease:
    """Acquire and hold until cancelled (a cancel before the grant is what the tests want)."""
    async with lessor.lease(section, part, dur):
        await asyncio.Event().wait()
    raise AssertionError("never reached")


async def live_becomes(stored: Stored, section: str, others: dict[str, list[Partition]]) -> None:
    """Fail unless, within :data:`CLEAN_UP` seconds, the section's live entries are exactly
    ``others``: nothing of :data:`HOLDER`'s."""
    deadline = time.monotonic() + CLEAN_UP
    while (live := stored.live(section)) != others:
        assert time.monotonic() < deadline, f"still live {CLEAN_UP}s after the cancel: {live}"
        await asyncio.sleep(0.01)  # the clean-up is a task of the lessor's: let it run


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_a_task_cancelled_at_every_await_point_of_an_acquisition_leaves_nothing_held(
    etcd_server: LocalEtcd, prefix: str, scenario: Scenario
) -> None:
    endpoints = list(etcd_server.endpoints)

    async def learn() -> list[Point]:
        """The acquisition's points, from a run that is not cancelled."""
        case = Case(scenario, endpoints, prefix, f"{scenario.name}-points")
        try:
            await case.prepare()
            gates = case.gates()
            async with case.lessor.lease(case.section, PART, scenario.dur) as lease:
                points = list(gates.passed)
                assert lease.partitions == scenario.granted
            if scenario.lose is not None:
                assert gates.lost is not None and gates.lost in points
        finally:
            await case.close()
        return points

    async def cancelled_at(n: int, point: Point, stored: Stored) -> None:
        case = Case(scenario, endpoints, prefix, f"{scenario.name}-{n}")
        try:
            await case.prepare()
            gates = case.gates(hold_at=n)
            task = asyncio.create_task(acquire(case.lessor, case.section, PART, scenario.dur))
            assert await gates.held(task) == point, f"not held at {point}: {gates.passed}"
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert task.cancelled()
            await live_becomes(stored, case.section, case.others())
        finally:
            await case.close()
        assert case.lessor.gated.closed, f"cancelled {point}: aclose() did not shut it down"
        assert HOLDER not in stored.live(case.section)  # nor after closing (others: gone too)

    async def main() -> None:
        points = await learn()
        sides = {p.side for p in points}
        assert sides == {BEFORE, AFTER} and len(points) >= 2, points
        with closing(Stored(endpoints, prefix)) as stored:
            for n, point in enumerate(points):
                await cancelled_at(n, point, stored)
        print(f"\n{scenario.name}: cancelled at each of {len(points)} points: "
              f"{', '.join(map(str, points))}")  # fmt: skip

    run(main())


def _queues(point: Point) -> bool:
    return point.call == "wait.WaitTurn" and point.side == BEFORE


def _txn_at(side: str, nth: int = 1) -> Callable[[Point], bool]:
    """Accepts the ``side`` point of the ``nth`` Txn it is shown."""
    seen: list[Point] = []

    def accepts(point: Point) -> bool:
        if point.call == "kv.Txn" and point.side == BEFORE:
            seen.append(point)
        return len(seen) == nth and point.call == "kv.Txn" and point.side == side

    return accepts


@pytest.mark.parametrize("cancelled", ["queued", "leader", "grouped"])
@pytest.mark.parametrize("side", [BEFORE, AFTER])
def test_a_task_cancelled_at_the_gate_behind_a_leader_leaves_nothing_of_it_held(
    etcd_server: LocalEtcd, prefix: str, cancelled: str, side: str
) -> None:
    """Two tasks on one section; the leader's swap is held (before it is sent, or applied and
    its reply not delivered) while the other queues behind it.

    * ``queued``: the queued task is cancelled; the leader still gets its grant, and the
      other's ranges stay free.
    * ``leader``: the leader is cancelled; the queued task takes the lead and gets its grant,
      and the leader's swap holds nothing.
    * ``grouped``: the leader's first swap fails (another holder wrote after our state was
      cached), so its next one carries both (group commit); that one is held and the queued
      task cancelled: its entry, in a swap it does not make, is given back; the leader keeps
      its grant.
    """
    endpoints = list(etcd_server.endpoints)
    section = f"gate-{cancelled}-{side}"
    first, second = P(0, 10), P(10, 20)
    grouped = cancelled == "grouped"
    scenario = Scenario(cancelled, warm=True, contended=grouped)

    async def main() -> None:
        case = Case(scenario, endpoints, prefix, section)
        try:
            await case.prepare()  # the next acquisition's first call is its swap
            gates = case.gates(hold_at=_txn_at(BEFORE if grouped else side))
            granted: dict[str, asyncio.Future[Lease]] = {}
            let_go = asyncio.Event()

            async def hold(name: str, part: Partition) -> None:
                granted[name] = asyncio.get_running_loop().create_future()
                async with case.lessor.lease(section, part, DUR) as lease:
                    granted[name].set_result(lease)
                    await let_go.wait()

            leader = asyncio.create_task(hold("leader", first))
            assert await gates.held(leader) is not None
            queued = asyncio.create_task(hold("queued", second))
            await gates.reached(_queues)  # it waits for its turn behind the leader
            if grouped:  # the first swap fails; hold the next, which carries both
                held, gates = gates, case.gates(hold_at=_txn_at(side))
                held.release()
                assert await gates.held(leader) is not None
                assert case.lessor.shells[section].gate.queued == 0  # inside the attempt
            victim, survivor = (leader, queued) if cancelled == "leader" else (queued, leader)
            victim.cancel()
            with pytest.raises(asyncio.CancelledError):
                await victim
            gates.release()
            name = "queued" if cancelled == "leader" else "leader"
            lease = await asyncio.wait_for(granted[name], 10)
            kept = second if cancelled == "leader" else first
            assert lease.partitions == [kept]
            with closing(Stored(endpoints, prefix)) as stored:
                await live_becomes(stored, section, {HOLDER: [kept], **case.others()})
                let_go.set()
                await asyncio.wait_for(survivor, 10)
                await live_becomes(stored, section, case.others())
        finally:
            await case.close()
        assert case.lessor.gated.closed

    run(main())
