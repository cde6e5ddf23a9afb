"""Adversarial review of "releases ride" (branch hot-fold): schedules that break an invariant.

Each test states its schedule. They run the real core (``core.release`` with a
:class:`~lessor.etcd.core.Boarding`, the real :class:`~lessor.etcd.gate.Gate`) against the
in-memory etcd model, on a clock the test moves.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from lessor import Partition
from lessor.etcd import core
from lessor.etcd.gate import Waiter
from lessor.etcd.ops import CleanUp, DeleteMarker, DeleteMarkers, WaitTurn
from tests.support.driver import Proc, live_entries
from tests.support.etcd_model import EtcdModel, FakeClock


class Interrupt(BaseException):
    """Stands for a KeyboardInterrupt (a signal handler's exception) reaching the thread."""


def _keep_acquiring(p: Proc, etcd: EtcdModel, clock: FakeClock, seconds: int) -> None:
    """The process goes on acquiring in another section, each acquisition renewing the shared
    etcd lease, for ``seconds`` (as in tests/core/test_interrupted_endings.py)."""
    for i in range(seconds):
        clock.advance(1.0)
        etcd.expire()
        m = p.acquire("other", Partition(100 + i, 101 + i), 5.0)
        assert m.grant is not None and isinstance(m.grant.handle, core.Held)
        p.run("other", core.release(m.grant.handle, p.config))


def _boarding(p: Proc, sid: str) -> core.Boarding:
    turn = threading.Event()
    return core.Boarding(p.section(sid).gate, turn, turn.set, turn.clear)


@pytest.mark.parametrize("where", ["main's path (no ride)", "ride waiting", "ride leading"])
def test_a_second_interrupt_at_a_rides_clean_up_leaves_the_marker_on_a_renewed_lease(
    where: str,
) -> None:
    """Schedule (a double Ctrl-C, as in test_interrupted_endings.py's abandon case):

    1. a holds [0, 4) of section s for 5 s on the process's shared etcd lease, and releases;
    2. the first interrupt reaches a's thread on the marker's way out: on main's path at its
       ``DeleteMarker`` (then ``_delete_marker`` retires the lease at once); with a ride,
       while it waits aboard behind an acquisition that leads (``WaitTurn``), or at the
       ``DeleteMarkers`` Txn it sends as leader of the releases;
    3. ``core.release`` yields its ``CleanUp`` and the second interrupt arrives before the
       shell starts it (the window "Issue 11's leftover" accepts *because the lease is
       retired*): the clean-up never runs;
    4. the process goes on acquiring another section for 15 s, renewing its shared lease.

    Main's path: the lease was retired at the first failure, so the marker ends at its TTL.
    With a ride, nothing retires the lease (``_ride`` and ``_carry`` only alight / tell the
    rides; only ``_delete_marker`` retires), so the renewals keep a's released marker, and its
    ranges, held forever: a lost release, and a renewal that keeps a released marker alive."""
    clock = FakeClock()
    etcd = EtcdModel(clock)
    p = Proc("p", etcd, clock)
    m = p.acquire("s", Partition(0, 4), 5.0)
    assert m.grant is not None and isinstance(m.grant.handle, core.Held)
    held = m.grant.handle
    section = p.section("s")
    handlers = section._handlers
    saved = dict(handlers)
    first = {
        "main's path (no ride)": DeleteMarker,
        "ride waiting": WaitTurn,
        "ride leading": DeleteMarkers,
    }[where]
    fired: list[type] = []

    def interrupt(kind: type) -> Any:
        def handler(op: Any) -> Any:
            fired.append(kind)
            raise Interrupt()

        return handler

    handlers[first] = interrupt(first)
    handlers[CleanUp] = interrupt(CleanUp)
    leader = None
    if where == "ride waiting":  # an acquisition leads the gate: the release waits aboard
        leader = Waiter(p.member(Partition(10, 11), 5.0), lambda: None)
        assert section.gate.join(leader)
    boarding = None if where == "main's path (no ride)" else _boarding(p, "s")
    try:
        with pytest.raises(Interrupt):
            section.drive(core.release(held, p.config, boarding))
    finally:
        handlers.clear()
        handlers.update(saved)
        if leader is not None:
            section.gate.hand_over(leader)
    assert fired == [first, CleanUp], fired
    _keep_acquiring(p, etcd, clock, 15)  # past a's deadline (5 s) and the lease's TTL
    seqs = [e.seq for e in live_entries(etcd, "s")]
    assert m.seq not in seqs, (
        f"15 s on, a's released entry is still live on a lease renewed all along "
        f"(retired: {held.lease.retired})"
    )
