"""An exception reaching a thread anywhere on the way to ending a grant or an abandoned swap
leaves nothing held past its deadline, nor past its etcd lease's TTL (regressions from the
fourth review of the fast-failover work).

* ``core.release`` claimed the grant's end (so the reaper skips it) one line before the
  ``try`` whose handler deletes the marker apart: an exception between the two left the
  marker on a lease that later acquisitions kept renewing. Checked here at every line.
* ``core.release`` took only etcd's own failures for a failed deletion: any other exception
  out of the deletion (a ``RuntimeError`` from a channel of another event loop, found by the
  review of ``lessor.aio``) left the lease unretired, and the marker lived on its renewals.
* ``core.abandon`` took the member's etcd lease before it yielded the clean-up: a second
  exception on the leader's way out (a double Ctrl-C) then found no lease to retire, and the
  possibly committed entry lived on the renewed lease.

Raising from a trace function's 'line' event is the same as an asynchronous exception
delivered just before that line (as in tests/core/test_interrupts.py).
"""

from __future__ import annotations

import importlib
import sys
import threading
from typing import Any

from lessor import Partition
from lessor.etcd import core
from lessor.etcd.gate import Waiter
from lessor.etcd.keys import SectionKeys
from lessor.etcd.ops import CleanUp, DeleteMarker, Swap
from lessor.etcd.shell import SectionShell
from tests.support.driver import PREFIX, Proc, live_entries
from tests.support.etcd_model import EtcdModel, FakeClock
from tests.support.interrupts import code_lines, raising_once_at

release_module = importlib.import_module("lessor.etcd.core.release")  # core.release: its function


class Interrupt(BaseException):
    """Stands for a KeyboardInterrupt (a signal handler's exception) reaching the thread."""


def join_clean_ups() -> None:
    for t in threading.enumerate():
        if t.name == "lessor clean-up":
            t.join(10)


def _keep_acquiring(
    p: Proc, etcd: EtcdModel, clock: FakeClock, seconds: int, watched: tuple[core.Held, ...] = ()
) -> None:
    """The process goes on acquiring in another section, each acquisition renewing the
    shared etcd lease, for ``seconds``; the reaper (played here) ends each of ``watched``
    once its deadline has passed."""
    for i in range(seconds):
        clock.advance(1.0)
        etcd.expire()
        for held in watched:
            if held.until <= clock():
                p.section(held.known.keys.section_id).drive(core.expire(held, p.config))
        m = p.acquire("other", Partition(100 + i, 101 + i), 5.0)
        assert m.grant is not None and isinstance(m.grant.handle, core.Held)
        p.run("other", core.release(m.grant.handle, p.config))


def _release_interrupted_at(line: int) -> str | None:
    """Release a 5 s grant with an exception arriving at ``line`` of ``core.release``, then
    let the process go on for 15 s: what is wrong then (None: nothing; "" the line is not
    reached by such a release)."""
    clock = FakeClock()
    etcd = EtcdModel(clock)
    p = Proc("p", etcd, clock)
    m = p.acquire("s", Partition(0, 4), 5.0)
    assert m.grant is not None and isinstance(m.grant.handle, core.Held)
    tracer, fired = raising_once_at(release_module.release, line, Interrupt())
    sys.settrace(tracer)
    try:
        p.section("s").drive(core.release(m.grant.handle, p.config))  # as _release drives it
    except Interrupt:
        pass
    finally:
        sys.settrace(None)
    if not fired:
        return ""
    join_clean_ups()
    _keep_acquiring(p, etcd, clock, 15, (m.grant.handle,))  # past the deadline and the TTL
    seqs = [e.seq for e in live_entries(etcd, "s")]
    return f"line {line}: entry still live 15 s on" if m.seq in seqs else None


def test_a_release_interrupted_at_any_line_leaves_no_marker_past_the_deadline() -> None:
    outcomes = {line: _release_interrupted_at(line) for line in code_lines(release_module.release)}
    reached = [line for line, outcome in outcomes.items() if outcome != ""]
    assert len(reached) >= 10, f"the interrupt reached only lines {reached}"
    assert not [o for o in outcomes.values() if o], [o for o in outcomes.values() if o]


def test_a_second_interrupt_before_an_abandoned_swaps_clean_up_retires_its_lease() -> None:
    """a and b share one swap and one etcd lease; the swap commits, b's thread departs, a's
    is interrupted before it takes the reply in (both ambiguous), and a second interrupt
    arrives at b's clean-up, before it is performed."""
    clock = FakeClock()
    etcd = EtcdModel(clock)
    p = Proc("p", etcd, clock)
    section = SectionShell(p.transport, SectionKeys.of(PREFIX, "s"), p.pool)
    p.sections["s"] = section
    a = p.member(Partition(0, 1), 5.0)
    b = p.member(Partition(2, 3), 5.0)
    wa, wb = Waiter(a, lambda: None), Waiter(b, lambda: None)
    assert section.gate.join(wa) and not section.gate.join(wb)
    real_swap, real_clean_up = section._handlers[Swap], section._handlers[CleanUp]
    clean_ups: list[Any] = []

    def swap(op: Any) -> Any:
        real_swap(op)  # committed: a's and b's entries, on one shared lease
        assert section.drive(core.give_up(section.known, section.gate, wb, p.config)) is None
        raise Interrupt()  # a's thread, before the reply is taken in

    def clean_up(op: Any) -> Any:
        clean_ups.append(op)
        if len(clean_ups) == 2:  # the second Ctrl-C: at b's clean-up, before it runs
            raise Interrupt()
        return real_clean_up(op)

    section._handlers[Swap], section._handlers[CleanUp] = swap, clean_up
    try:
        section.drive(core.lead(section.known, section.gate, wa, p.config))
    except Interrupt:
        section.drive(core.give_up(section.known, section.gate, wa, p.config))
    else:
        raise AssertionError("the interrupts never fired")
    finally:
        section._handlers[Swap], section._handlers[CleanUp] = real_swap, real_clean_up
    join_clean_ups()
    assert len(clean_ups) == 2, clean_ups
    assert a.error is not None and b.error is not None, "neither caller got a grant"
    _keep_acquiring(p, etcd, clock, 10)  # past b's deadline (5 s) and the lease's TTL
    seqs = [e.seq for e in live_entries(etcd, "s")]
    assert b.seq not in seqs, f"10 s on, b's entry is still live (live seqs {seqs})"


def test_a_deletion_failing_with_any_exception_retires_the_lease() -> None:
    """Every try to delete the marker (the release's and its clean-up's) raises an exception
    that is neither etcd's answer nor retryable; the process goes on acquiring, renewing its
    shared etcd lease. The marker must still end, with the lease."""
    clock = FakeClock()
    etcd = EtcdModel(clock)
    p = Proc("p", etcd, clock)
    m = p.acquire("s", Partition(0, 4), 5.0)
    assert m.grant is not None and isinstance(m.grant.handle, core.Held)
    section = p.section("s")
    real_delete = section._handlers[DeleteMarker]
    tries: list[Any] = []

    def delete(op: Any) -> Any:
        tries.append(op)
        raise RuntimeError("a channel of another event loop")

    section._handlers[DeleteMarker] = delete
    try:
        section.drive(core.release(m.grant.handle, p.config))
    except RuntimeError:
        pass
    else:
        raise AssertionError("the release did not fail")
    finally:
        join_clean_ups()
        section._handlers[DeleteMarker] = real_delete
    assert tries, "no deletion was tried"
    _keep_acquiring(p, etcd, clock, 15)  # past the deadline and the lease's TTL
    seqs = [e.seq for e in live_entries(etcd, "s")]
    assert m.seq not in seqs, f"15 s on, the released entry is still live (live seqs {seqs})"
