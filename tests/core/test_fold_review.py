"""Releases ride (gate.py, core/release.py): the schedules an adversarial review found to break
an invariant, kept as regression tests (each fixed since; each states its schedule).

Each test states its schedule. They run the real core (``core.release`` with a
:class:`~lessor.etcd.core.Boarding`, the real :class:`~lessor.etcd.gate.Gate`) against the
in-memory etcd model, on a clock the test moves.
"""

from __future__ import annotations

import threading
from typing import Any

import grpc
import pytest

from lessor import Partition
from lessor.etcd import core
from lessor.etcd.gate import Waiter
from lessor.etcd.ops import (
    CleanUp,
    DeleteMarker,
    DeleteMarkers,
    RetireLease,
    WaitTurn,
)
from lessor.etcd.transport import RetryableRpc
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


@pytest.mark.parametrize("ride", [False, True], ids=["main's path (no ride)", "ride"])
def test_a_release_to_a_hung_member_retires_its_lease_no_later_than_on_main(ride: bool) -> None:
    """Schedule: a holds [0, 4) of s on the shared etcd lease; the member hangs every deletion
    (it runs to its timeout, then fails as unknown); a releases, nobody else acquiring.

    Main's path: the marker's ``DeleteMarker`` runs one call's time (``release_timeout``, 1 s
    here, one endpoint), fails, and the lease is retired at once: from then on no renewal
    keeps the marker alive, and the release is over within ``release_timeout`` (the README:
    "the marker's delete tries one etcd member after another within ``release_timeout``").

    With a ride: a leads the releases and sends its ``DeleteMarkers`` with a whole call's time
    (``_carry``); it fails as unknown, and then ``_delete_marker`` starts over with a fresh
    ``release_timeout``. The lease is retired a whole call later (2 s), so meanwhile renewals
    for the process's other acquisitions keep a released marker alive twice as long, and the
    release takes twice ``release_timeout``. (A ride taken by a swap that hangs waits the same
    whole call, ``landed_by``, before ``_delete_marker`` starts over.)"""
    clock = FakeClock()
    etcd = EtcdModel(clock)
    p = Proc("p", etcd, clock)
    m = p.acquire("s", Partition(0, 4), 5.0)
    assert m.grant is not None and isinstance(m.grant.handle, core.Held)
    held = m.grant.handle
    section = p.section("s")
    handlers = section._handlers
    saved = dict(handlers)
    retired_at: list[float] = []

    def hung(op: Any) -> Any:
        clock.advance(op.timeout)
        raise RetryableRpc("model", grpc.StatusCode.DEADLINE_EXCEEDED, "hung member (model)")

    def retire(op: Any) -> Any:
        retired_at.append(clock())
        return saved[RetireLease](op)

    for kind in (DeleteMarker, DeleteMarkers):
        handlers[kind] = hung
    handlers[RetireLease] = retire  # (GiveBack is answered: only the deletions hang)
    began = clock()
    try:
        # The retired lease's last user revokes it on its way out, so this ends quietly.
        section.drive(core.release(held, p.config, _boarding(p, "s") if ride else None))
    finally:
        handlers.clear()
        handlers.update(saved)
    took = clock() - began
    assert retired_at, "the lease was never retired"
    assert retired_at[0] - began <= p.config.release_timeout, (
        f"the lease was retired {retired_at[0] - began:.2f}s after the release began "
        f"(release_timeout {p.config.release_timeout}s); the release took {took:.2f}s"
    )


@pytest.mark.parametrize("ride", [False, True], ids=["main's path (no ride)", "ride"])
def test_a_release_does_not_wait_for_an_acquisition_leader_that_sends_nothing(ride: bool) -> None:
    """Schedule: a holds [0, 4) of s. Another acquisition b of the same process leads s's
    gate but sends no Txn for a while: its attempt lost and it sleeps its back-off pause
    (``lead``'s ``Wait``; under contention that is 16 % of S3's time), or it waits for ranges
    another process holds, or on hot-both it defers to another process's turn. a releases.

    Main's path: a's ``DeleteMarker`` goes at once; its ranges are free for every process
    when the release begins (no time passes on the test's clock for a call).

    With a ride: an acquisition leads, so a does not lead the releases; it waits aboard a
    full ``RIDE_WAIT`` (10 ms) for a swap that is not coming, then spends its own write all
    the same. Every release of the process made while its leader pauses frees its ranges
    10 ms later than on main, and costs the same write. (The gate could not tell a leader
    that is about to swap from one that is pausing.)

    Fixed: ``lead`` tells the gate before it pauses (``Gate.pausing``), and the releases
    aboard then lead themselves."""
    clock = FakeClock()
    etcd = EtcdModel(clock)
    p = Proc("p", etcd, clock)
    m = p.acquire("s", Partition(0, 4), 5.0)
    assert m.grant is not None and isinstance(m.grant.handle, core.Held)
    held = m.grant.handle
    section = p.section("s")
    handlers = section._handlers
    saved = dict(handlers)
    marker = held.known.keys.marker(held.lease.id, held.seq)
    freed_at: list[float] = []

    def wait_turn(op: Any) -> Any:  # nobody wakes the ride: its wait runs out
        clock.advance(op.seconds)

    def deleted(kind: type) -> Any:
        def handler(op: Any) -> Any:
            result = saved[kind](op)
            if marker not in etcd.kvs and not freed_at:
                freed_at.append(clock())
            return result

        return handler

    handlers[WaitTurn] = wait_turn
    handlers[DeleteMarker] = deleted(DeleteMarker)
    handlers[DeleteMarkers] = deleted(DeleteMarkers)
    b = Waiter(p.member(Partition(10, 11), 5.0), lambda: None)
    assert section.gate.join(b)  # b leads, and is between two attempts: it pauses
    section.gate.pausing()  # as lead does before its back-off's or deferral's Wait
    began = clock()
    try:
        section.drive(core.release(held, p.config, _boarding(p, "s") if ride else None))
    finally:
        handlers.clear()
        handlers.update(saved)
        section.gate.hand_over(b)
    assert freed_at, "the marker was never deleted"
    assert freed_at[0] - began == 0.0, (
        f"a's ranges came free {1000 * (freed_at[0] - began):.0f} ms after its release began, "
        f"waiting for a swap from a leader that sent none"
    )


def test_a_ride_handed_the_lead_and_then_carried_by_a_swap_gives_the_lead_back() -> None:
    """Schedule (threads; found by tests/core/test_fold_review_threads.py):

    1. a and b hold [0, 4) and [4, 8) of s; acquisition w leads s's gate (between attempts);
    2. a releases: an acquisition leads, so a's ride waits aboard (``WaitTurn``);
    3. w is done and hands the lead over; no acquisition waits, so the gate makes a's ride
       the leader of the releases (``_lead_releases``: ``ride.lead``, ``_releasing``) and
       sets a's event;
    4. before a's thread runs, acquisition c comes, leads, and its swap takes a's ride
       (``take_rides``) and lands it: a's marker is deleted, ``carried`` is True;
    5. a's thread wakes: ``while ride.carried is None`` is already false, so it leaves
       ``_ride`` without looking at ``ride.lead``: it never calls ``done_carrying`` nor
       ``alight``, and the gate's ``_releasing`` names it for ever;
    6. b releases with nobody acquiring: ``_lead_releases`` sees a release "leading" and
       makes nobody lead, so b waits its full ``RIDE_WAIT`` for a Txn that never comes,
       then deletes its marker itself; so does every release on this gate from now on that
       no swap takes within 10 ms (every release of a lone thread's acquire/release cycle,
       S1's shape), for as long as the section's shell lives.

    Expected: b's ranges come free when its release begins, as they would had a given the
    lead back (and as on main)."""
    clock = FakeClock()
    etcd = EtcdModel(clock)
    p = Proc("p", etcd, clock)
    a = p.acquire("s", Partition(0, 4), 5.0)
    b = p.acquire("s", Partition(4, 8), 5.0)
    assert a.grant is not None and isinstance(a.grant.handle, core.Held)
    assert b.grant is not None and isinstance(b.grant.handle, core.Held)
    section = p.section("s")
    gate = section.gate
    w = Waiter(p.member(Partition(10, 11), 5.0), lambda: None)
    assert gate.join(w)  # 1.
    turn = threading.Event()
    steps = core.release(a.grant.handle, p.config,
                         core.Boarding(gate, turn, turn.set, turn.clear))  # fmt: skip
    op = next(steps)  # 2.
    assert isinstance(op, WaitTurn), op
    gate.hand_over(w)  # 3.
    assert turn.is_set(), "a's ride was not handed the lead"
    c = p.acquire("s", Partition(20, 21), 5.0)  # 4.
    assert c.grant is not None
    a_marker = a.grant.handle.known.keys.marker(a.grant.handle.lease.id, a.grant.handle.seq)
    assert a_marker not in etcd.kvs, "c's swap did not carry a's ride"
    result: Any = None  # 5.: a's thread runs on
    try:
        while True:
            op = steps.send(result)
            result = section.perform(op)
    except StopIteration:
        pass
    held = b.grant.handle  # 6.
    marker = held.known.keys.marker(held.lease.id, held.seq)
    handlers = section._handlers
    saved = dict(handlers)
    freed_at: list[float] = []

    def wait_turn(op: Any) -> Any:  # nobody wakes the ride: its wait runs out
        clock.advance(op.seconds)

    def deleted(kind: type) -> Any:
        def handler(op: Any) -> Any:
            result = saved[kind](op)
            if marker not in etcd.kvs and not freed_at:
                freed_at.append(clock())
            return result

        return handler

    handlers[WaitTurn] = wait_turn
    handlers[DeleteMarker] = deleted(DeleteMarker)
    handlers[DeleteMarkers] = deleted(DeleteMarkers)
    began = clock()
    try:
        section.drive(core.release(held, p.config, _boarding(p, "s")))
    finally:
        handlers.clear()
        handlers.update(saved)
    assert freed_at, "b's marker was never deleted"
    assert freed_at[0] - began == 0.0, (
        f"b's ranges came free {1000 * (freed_at[0] - began):.0f} ms after its release "
        f"began, nobody acquiring: the gate still thinks a's finished ride leads the releases"
    )
