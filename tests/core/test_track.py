"""Tracking grants for the reaper (``_settle`` in ``core/attempt.py``, ``Track``), regressions
from the second review of shared renewed leases (95b3b53); each failed there.

An exception delivered to the leading thread between ``steps.send`` returning a ``Track`` and
the shell performing it (KeyboardInterrupt, a signal handler's exception,
``PyThreadState_SetAsyncExc``) is thrown into the core at that yield. Proven here: every member
of the group commit is settled before it, the members that stay get tracked on the leader's way
out, the leader's own grant is given back, and a reaper whose thread cannot start loses no
grant; and (third review) an exception anywhere in the shell's Track loses no grant, nor does
a second exception on the leader's way out leave an entry held by nobody.

Raising from a trace function's 'line' event in the shell's frame is the same as an
asynchronous exception delivered at the check just before that line (as in
tests/core/test_interrupts.py).
"""

from __future__ import annotations

import inspect
import sys
import threading
from typing import Any

import pytest

from lessor import Context, Partition
from lessor.etcd import core
from lessor.etcd import drive as drive_module
from lessor.etcd import reaper as reaper_module
from lessor.etcd.gate import Waiter
from lessor.etcd.keys import SectionKeys
from lessor.etcd.ops import Track
from lessor.etcd.shell import SectionShell
from tests.support.driver import PREFIX, Proc, live_entries
from tests.support.etcd_model import EtcdModel, FakeClock
from tests.support.interrupts import code_lines, raising_once_at
from tests.support.threads import ThreadsExhausted


class Interrupt(BaseException):
    """Stands for KeyboardInterrupt reaching the leading thread."""


class RecordingReaper:
    """Stands for the lessor's Reaper: records what it is asked to track."""

    def __init__(self) -> None:
        self.watched: list[core.Held] = []

    def watch(self, held: core.Held) -> None:
        self.watched.append(held)


def line_of(text: str) -> int:
    src, first = inspect.getsourcelines(drive_module._drive)
    return first + next(i for i, line in enumerate(src) if text in line)


def raising_at_track_of(seq: int, error: BaseException) -> Any:
    """A tracer raising ``error`` once, after ``steps.send`` returned the ``Track`` of
    acquisition ``seq`` and before the shell performed it."""
    code, line, fired = drive_module._drive.__code__, line_of("result, error = None, None"), []

    def local(frame: Any, event: str, arg: Any) -> Any:
        op = frame.f_locals.get("op")
        if (event == "line" and frame.f_lineno == line and not fired
                and isinstance(op, Track) and any(h.seq == seq for h in op.helds)):  # fmt: skip
            fired.append(True)
            raise error
        return local

    return lambda frame, event, arg: local if frame.f_code is code else None


def join_clean_ups() -> None:
    for t in threading.enumerate():
        if t.name == "lessor clean-up":
            t.join(10)


class World:
    """One process (share_leases=True) with three queued acquisitions a, b, c of one section,
    disjoint ranges, dur 5 s; a leads. Its section tracks grants with a recording reaper."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.etcd = EtcdModel(self.clock)
        self.p = Proc("p", self.etcd, self.clock)
        self.reaper = RecordingReaper()
        self.section = SectionShell(self.p.transport, SectionKeys.of(PREFIX, "s"), self.p.pool,
                               reaper=self.reaper)  # type: ignore[arg-type]  # fmt: skip
        self.p.sections["s"] = self.section
        self.ctx_c = Context.background().with_value("who", "c")
        self.a = self.p.member(Partition(0, 1), 5.0)
        self.b = self.p.member(Partition(2, 3), 5.0)
        self.c = self.p.member(Partition(4, 5), 5.0, ctx=self.ctx_c)
        self.wa = Waiter(self.a, lambda: None)
        self.wb = Waiter(self.b, lambda: None)
        self.wc = Waiter(self.c, lambda: None)
        gate = self.section.gate
        assert gate.join(self.wa) and not gate.join(self.wb) and not gate.join(self.wc)

    def lead_a_interrupted_at_track_of_b(self) -> None:
        """a's thread, as ``EtcdLessor._acquire`` runs it: lead, and give up on an exception."""
        tracer = raising_at_track_of(self.b.seq, Interrupt())
        try:
            sys.settrace(tracer)
            try:
                self.section.drive(
                    core.lead(self.section.known, self.section.gate, self.wa, self.p.config)
                )
            finally:
                sys.settrace(None)
        except Interrupt:
            self.section.drive(
                core.give_up(self.section.known, self.section.gate, self.wa, self.p.config)
            )
        else:
            raise AssertionError("the interrupt never fired")
        join_clean_ups()


def test_a_grant_whose_track_an_interrupt_cut_off_is_still_ended_at_its_deadline() -> None:
    """Schedule: a leads one attempt for a, b, c; the swap writes all three entries. The
    leader settles a (``Track`` performed), then b: ``_finish`` sets ``b.grant`` and yields
    ``Track(b)``. Fault: an exception reaches a's thread as ``steps.send`` returns that
    ``Track``; it is thrown in at the yield, so the reaper is never told of b.

    a departs (its grant is released apart, as an orphan); b is settled, so ``Gate.finish``
    wakes b's thread, which returns b's grant to its caller. No one tracks b: if b's callback
    overruns, its marker is not deleted at its deadline, and while the process keeps
    acquiring (renewing the shared etcd lease) it is never deleted at all.

    Invariant 2 (a live holder's ranges free at its deadline) and the fix's own claim "the
    reaper tracks every grant as it is settled"."""
    w = World()
    w.lead_a_interrupted_at_track_of_b()
    assert w.b.grant is not None and isinstance(w.b.grant.handle, core.Held), "b was granted"
    held_b = w.b.grant.handle
    tracked = any(h is held_b for h in w.reaper.watched)
    assert tracked or held_b.ended.claimed, (
        f"b's grant (deadline t+5s, token {w.b.grant.token}) was handed to b's caller but the "
        f"reaper never tracked it (tracked: {[h.seq for h in w.reaper.watched]}), nor was it "
        "released: an overrun of b's callback keeps b's marker past its deadline"
    )


def test_an_interrupt_at_the_track_leaves_every_written_member_settled_and_tracked() -> None:
    """Every member is settled before the first yield, and the leader's way out tracks what
    the exception cut off: no entry the swap wrote is left held by nobody (found by the
    second review: c went back to the queue unsettled, and a cancel then left its marker to
    renewals)."""
    w = World()
    w.lead_a_interrupted_at_track_of_b()
    for m in (w.b, w.c):
        assert m.grant is not None and isinstance(m.grant.handle, core.Held)
        assert any(h is m.grant.handle for h in w.reaper.watched)
    assert w.a.grant is not None and isinstance(w.a.grant.handle, core.Held)
    assert w.a.grant.handle.ended.claimed  # a departed: its grant was given back
    assert [e.seq for e in live_entries(w.etcd, "s")] == [w.b.seq, w.c.seq]


def test_a_reaper_thread_that_cannot_start_loses_no_grant(monkeypatch: Any) -> None:
    """``Reaper.watch`` keeps the grant and starts the thread at a later grant, rather than
    raise into the core (found by the second review: the exception left b and c unsettled
    with their entries written)."""
    from lessor.etcd import reaper as reaper_module  # noqa: PLC0415

    exhausted = ThreadsExhausted()
    monkeypatch.setattr(reaper_module, "threading", exhausted)
    w = World()
    expired: list[core.Held] = []
    real = reaper_module.Reaper(expired.append)
    w.section._reaper = real  # the lessor's Reaper
    try:
        w.section.drive(core.lead(w.section.known, w.section.gate, w.wa, w.p.config))
        assert exhausted.failures == 0  # the thread could not start
        assert all(m.grant is not None for m in (w.a, w.b, w.c))
        assert [e.seq for e in live_entries(w.etcd, "s")] == [w.a.seq, w.b.seq, w.c.seq]
        late = w.p.acquire("s", Partition(9, 10), 5.0)  # the next grant starts the thread
        assert late.grant is not None
        assert any(t.name == "lessor reaper" and t.is_alive() for t in threading.enumerate())
    finally:
        real.close()


def raising_at_two_tracks(section: SectionShell) -> list[int]:
    """Raise Interrupt as the shell is about to perform a Track, before it tracks anything:
    at the first Track (a, b, c), then again at the Track the leader's way out yields (a
    double Ctrl-C). (tests/core/test_track.py's tracer can fire only once: a tracer that
    raises is unset.)"""
    real, fired = section._handlers[Track], []

    def track(op: Track) -> None:
        if len(fired) < 2:
            fired.append(len(op.helds))
            raise Interrupt()
        real(op)

    section._handlers[Track] = track
    return fired


def test_a_second_interrupt_on_the_leaders_way_out_leaves_no_entry_held_by_nobody() -> None:
    w = World()
    fired = raising_at_two_tracks(w.section)
    try:
        w.section.drive(core.lead(w.section.known, w.section.gate, w.wa, w.p.config))
    except Interrupt:
        # EtcdLessor._acquire's own way out
        w.section.drive(core.give_up(w.section.known, w.section.gate, w.wa, w.p.config))
    else:
        raise AssertionError("the interrupts never fired")
    join_clean_ups()
    assert fired == [3, 2], fired  # Track(a, b, c), then the except path's Track(b, c)
    # a's caller got an exception: it holds nothing. Let the process keep acquiring (each
    # acquisition renews the shared lease) past a's deadline and past the lease's TTL.
    held_a = w.a.grant.handle if w.a.grant is not None else None
    for i in range(8):
        w.clock.advance(1.0)
        w.etcd.expire()
        m = w.p.acquire("s", Partition(100 + i, 101 + i), 5.0)  # renews the shared lease
        assert m.grant is not None and isinstance(m.grant.handle, core.Held)
        w.p.run("s", core.release(m.grant.handle, w.p.config))
    seqs = [e.seq for e in live_entries(w.etcd, "s")]
    # Third review: the second exception skipped the way out, and a's entry stayed live for
    # as long as the process kept renewing the shared lease.
    assert w.a.seq not in seqs, (
        f"8 s after the swap (a's deadline was 5 s), a's entry is still live in etcd: live "
        f"seqs {seqs}; a's caller raised and left; reaper watched "
        f"{[h.seq for h in w.reaper.watched]}; a ended={held_a.ended.claimed if held_a else None}; "
        f"abandoned={list(w.section.known.abandoned.current())}; lease retired="
        f"{held_a.lease.retired if held_a else None}"
    )


@pytest.mark.parametrize("line", code_lines(reaper_module.track))
def test_an_interrupt_anywhere_in_the_track_of_a_staying_member_loses_no_grant(
    line: int,
) -> None:
    """Third review: ``track`` marked a grant tracked before it gave it to the reaper, and
    an exception between the two left it marked and never watched (an overrun would then
    keep its marker alive with the shared lease's renewals)."""
    w = World()

    def of_b(frame: Any) -> bool:
        held = frame.f_locals.get("held")
        return held is not None and held.seq == w.b.seq

    tracer, _ = raising_once_at(reaper_module.track, line, Interrupt(), of_b)
    try:
        sys.settrace(tracer)
        try:
            w.section.drive(core.lead(w.section.known, w.section.gate, w.wa, w.p.config))
        finally:
            sys.settrace(None)
    except Interrupt:
        w.section.drive(core.give_up(w.section.known, w.section.gate, w.wa, w.p.config))
    else:
        pytest.skip("no exception can arrive there for b (a line b's Track does not reach)")
    join_clean_ups()
    assert w.b.grant is not None and isinstance(w.b.grant.handle, core.Held), "b was granted"
    held_b = w.b.grant.handle
    watched = [h.seq for h in w.reaper.watched]
    assert any(h is held_b for h in w.reaper.watched) or held_b.ended.claimed, (
        f"b's grant (seq {w.b.seq}, token {w.b.grant.token}) went to b's caller, but the reaper "
        f"never watched it (watched: {watched}; b.tracked.claimed={held_b.tracked.claimed}): "
        "an overrun of b keeps its marker past its deadline"
    )
