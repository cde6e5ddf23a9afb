"""The acquisition core tells observers of every attempt (how it ended, how long it took, the
pause after it) and of every acquisition's wait at its section's gate: what the benchmark's
breakdown of an acquisition's time is built from."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from lessor import Partition
from lessor.etcd import core
from lessor.etcd.gate import Waiter
from lessor.etcd.ops import Op, Swap
from lessor.etcd.retry import JITTER
from lessor.observe import Observer, Outcome, add_observer, remove_observer
from tests.support.driver import Proc
from tests.support.etcd_model import EtcdModel, FakeClock


class Timings(Observer):
    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def attempt(
        self,
        backend: str,
        section_id: str,
        *,
        members: int,
        outcome: Outcome,
        seconds: float,
        pause: float,
    ) -> None:
        self.events.append(("attempt", backend, section_id, members, outcome, seconds, pause))

    def queued(self, backend: str, section_id: str, seconds: float, leads: bool) -> None:
        self.events.append(("queued", backend, section_id, seconds, leads))


@pytest.fixture
def timings() -> Iterator[Timings]:
    t = Timings()
    add_observer(t)
    try:
        yield t
    finally:
        remove_observer(t)


def test_a_lost_swap_then_a_won_one_and_the_wait_of_a_member_another_led(
    timings: Timings,
) -> None:
    clock = FakeClock()
    etcd = EtcdModel(clock)
    p, q = Proc("p", etcd, clock), Proc("q", etcd, clock)
    sec = p.section("s")
    a, b = p.member(Partition(0, 1), 10.0), p.member(Partition(2, 3), 10.0)
    wa, wb = Waiter(a, lambda: None), Waiter(b, lambda: None)
    assert sec.gate.join(wa) and not sec.gate.join(wb)
    clock.advance(0.004)  # b waits at the gate from here on

    swaps = []

    def on_op(op: Op) -> None:
        if isinstance(op, Swap):
            swaps.append(op)
            clock.advance(0.003)  # each swap's round trip
            if len(swaps) == 1:  # another process writes the section first: p's swap loses
                q.acquire("s", Partition(5, 6), 10.0)

    steps = core.acquire(sec.known, sec.gate, wa, leads=True, turn=threading.Event(),
                         config=p.config)  # fmt: skip
    p.run("s", steps, on_op=on_op)
    assert len(swaps) == 2 and a.grant is not None and b.grant is not None
    # b's attempt settled it: its own acquisition only looks, and makes no attempt
    p.run("s", core.acquire(sec.known, sec.gate, wb, leads=False, turn=threading.Event(),
                            config=p.config))  # fmt: skip

    queued_a, other, lost, won, queued_b = timings.events
    assert queued_a == ("queued", "etcd", "s", 0.0, True)
    assert other == ("attempt", "etcd", "s", 1, "settled", 0.0, 0.0)  # q's, inside p's swap
    assert lost[:5] == ("attempt", "etcd", "s", 2, "lost")
    assert lost[5] == pytest.approx(0.003) and 0.0 <= lost[6] <= JITTER
    assert won[:5] == ("attempt", "etcd", "s", 2, "settled")
    assert won[5] == pytest.approx(0.003) and won[6] == 0.0  # a is settled: no pause follows
    assert queued_b[:3] == ("queued", "etcd", "s") and queued_b[4] is False
    assert queued_b[3] == pytest.approx(0.004 + 0.003 + lost[6] + 0.003)
