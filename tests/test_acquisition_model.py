"""Model-based test of the etcd lessor's acquisition core against an in-memory etcd.

Several simulated processes, each with its own lease pool, sections and gates, run
acquisitions ("threads") against one :class:`~tests.support.etcd_model.EtcdModel`. Hypothesis
chooses every interleaving: which thread performs its next operation, what happens to that
call (answered, reply lost, dropped, or applied later), when holders release, when time moves
and leases expire, when a thread is interrupted or its caller cancels. The core
(``lessor.etcd.core``), the Txns (``state.py``) and the lease pool run unchanged; only the
shell is the test's: one operation per step, no real threads, no real clock.

After every step it checks:

* **no overlap**: within a section, no two holders before their deadlines share a key;
* **tokens**: a holder's token is its marker's create revision in etcd, and per key tokens
  strictly increase in grant order;
* **gates**: a gate with waiters has a leader that can run;

and at the end, once everything has run out: every acquisition ended, and a newcomer is
granted every key except those of releases that failed (those come free at their etcd lease's
expiry).

``LESSOR_MODEL_EXAMPLES`` sets the number of examples (``nox -s safety`` runs more).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from lessor import Context, Grant, Partition
from lessor.etcd import core
from lessor.etcd import section as section_codec
from lessor.etcd.gate import Waiter
from lessor.etcd.keys import Owner, SectionKeys
from lessor.etcd.leases import LeasePool
from lessor.etcd.ops import CleanUp, Op, Steps, Tombstone, Wait
from lessor.etcd.retry import Backoff
from lessor.etcd.shell import SectionShell
from lessor.etcd.state import TOMBSTONE
from lessor.partition import SortedPartitions, SortedPartitionsBuilder
from tests.support.etcd_model import FAULTS, EtcdModel, FakeClock, ModelTransport

KEYS = 16
SECTIONS = ("s0", "s1")
PROCESSES = 3
MAX_ACTIVE = 10  # acquisitions running at once, all processes together
PREFIX = "/model/"
RARELY = st.sampled_from((True, False, False, False, False))  # a rule's chance to act
TRACE = os.environ.get("LESSOR_MODEL_TRACE") == "1"
EXAMPLES = int(os.environ.get("LESSOR_MODEL_EXAMPLES", "400"))


class Interrupt(BaseException):
    """Stands for a KeyboardInterrupt (or any asynchronous exception) reaching a thread."""


class Process:
    """One simulated lessor process: its pool, and its sections' states and gates."""

    def __init__(self, name: str, etcd: EtcdModel, clock: FakeClock, share: bool) -> None:
        self.name = name
        self.transport = ModelTransport(etcd)
        pool = LeasePool(self.transport.rpc, margin=0.2, share=share, clock=clock)
        self.config = core.Config(holder=name, rpc_timeout=1.0, release_timeout=1.0, clock=clock)
        self.sections = {
            sid: SectionShell(self.transport, SectionKeys.of(PREFIX, sid), pool) for sid in SECTIONS
        }
        self.seq = 0


@dataclass(eq=False)
class Holding:
    process: Process
    section_id: str
    ranges: SortedPartitions
    token: int
    deadline: float
    held: core.Held
    released: bool = False

    def active(self, now: float) -> bool:
        return not self.released and now < self.deadline


@dataclass(eq=False)
class Actor:
    """A simulated thread: an acquisition, a release, or a clean-up."""

    name: str
    process: Process
    section: SectionShell
    steps: Steps | None = None
    op: Op | None = None
    member: core.Member | None = None
    waiter: Waiter[core.Member] | None = None
    woken: bool = False
    gone: bool = False  # its thread was interrupted: nobody holds what it is granted
    released: Holding | None = None  # for a release: what it gives back
    error: BaseException | None = None
    began: int = 0  # the model's moment when the acquisition began
    tombstone: tuple[Owner, bool] | None = None  # a clean-up's last tombstone, and if it landed


class AcquisitionModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.etcd = EtcdModel(self.clock)
        self.processes = [
            Process(f"p{i}", self.etcd, self.clock, share=(False, True)[i % 2])
            for i in range(PROCESSES)
        ]
        self.actors: list[Actor] = []
        self.holdings: list[Holding] = []
        self.unclean: set[Owner] = set()  # entries whose removal met a failed call
        self._recorded: set[Actor] = set()
        self.moment = 0  # counts the changes the model has seen
        self.occupied: dict[str, dict[int, int]] = {sid: {} for sid in SECTIONS}  # key -> moment
        self.names = 0

    # -- driving actors ------------------------------------------------------------------------

    def _spawn(self, process: Process, section: SectionShell, steps: Steps, name: str) -> Actor:
        actor = Actor(name, process, section, steps=steps)
        self.actors.append(actor)
        self._resume(actor, None, None)
        return actor

    def _resume(self, actor: Actor, result: Any, error: BaseException | None) -> None:
        """Feed ``actor``'s last operation's outcome; run it up to its next etcd operation."""
        steps = actor.steps
        assert steps is not None
        while True:
            try:
                op = steps.send(result) if error is None else steps.throw(error)
            except StopIteration:
                actor.steps, actor.op = None, None
                self._ended(actor)
                return
            except (Interrupt, Exception) as e:
                actor.steps, actor.op = None, None
                actor.error = e
                self._ended(actor)
                if isinstance(e, Interrupt):
                    raise
                return
            result, error = None, None
            if isinstance(op, CleanUp):
                self._spawn(actor.process, actor.section, op.steps, f"clean-up {self.names}")
                self.names += 1
                continue
            actor.op = op
            return

    def _perform(self, actor: Actor, fault: str) -> None:
        op = actor.op
        assert op is not None
        if TRACE:
            m = actor.member
            state = f" | {m.lease and hex(m.lease.id)} {m.ambiguous} {m.lost_at}" if m else ""
            print(f"t={self.clock():.2f} rev={self.etcd.revision} {actor.name} {fault} "
                  f"{_show(op)}{state}")  # fmt: skip
        result: Any = None
        error: BaseException | None = None
        if fault != "ok" and actor.released is not None:
            self.unclean.add(actor.released.held.owner)  # its marker may outlive the release
        if isinstance(op, Tombstone):  # excused only if the clean-up ends on a failed call
            actor.tombstone = (op.owner, fault == "ok")
        if isinstance(op, Wait):  # a thread that sleeps lets time pass
            self.clock.advance(op.seconds)
            self.etcd.expire()
        else:
            actor.process.transport.fault = fault
            try:
                result = actor.section.perform(op)
            except Exception as e:
                error = e
        self._resume(actor, result, error)
        self._observe()

    def _run_now(self, actor: Actor, steps: Steps) -> Any:
        """Run ``steps`` to its end at once, every call answered (a thread's own clean-up)."""
        result: Any = None
        error: BaseException | None = None
        while True:
            try:
                op = steps.send(result) if error is None else steps.throw(error)
            except StopIteration as end:
                return end.value
            result, error = None, None
            if isinstance(op, CleanUp):
                self._spawn(actor.process, actor.section, op.steps, f"clean-up {self.names}")
                self.names += 1
            elif isinstance(op, Wait):  # a thread that sleeps lets time pass
                self.clock.advance(op.seconds)
                self.etcd.expire()
            else:
                try:
                    result = actor.section.perform(op)
                except Exception as e:
                    error = e
                self._observe()

    def _ended(self, actor: Actor) -> None:
        if actor.released is not None and actor.error is not None:
            self.unclean.add(actor.released.held.owner)
        if actor.tombstone is not None and not actor.tombstone[1]:
            self.unclean.add(actor.tombstone[0])  # the clean-up gave up: the lease frees it

    def _wake(self, actor: Actor) -> None:
        """A woken thread runs: it leads, or finds its acquisition settled."""
        actor.woken = False
        waiter = actor.waiter
        if waiter is not None and waiter.lead and actor.steps is None:
            section = actor.section
            actor.steps = core.lead(section.known, section.gate, waiter, actor.process.config)
            self._resume(actor, None, None)

    def _observe(self) -> None:
        """After every change: which keys etcd shows held, and what was newly granted."""
        self.moment += 1
        for sid in SECTIONS:
            for entry in self._live_entries(sid):
                for p in entry.ranges:
                    for k in range(p.low, p.high):
                        self.occupied[sid][k] = self.moment
        for actor in self._acquisitions():
            m = actor.member
            assert m is not None
            if m.grant is not None and actor not in self._recorded:
                self._recorded.add(actor)
                self._granted(actor, m.grant)

    def _granted(self, actor: Actor, grant: Grant) -> None:
        sid = actor.section.known.keys.section_id
        if not actor.gone:
            # Exactly the keys nobody held: a key free in etcd from the moment the acquisition
            # began until now must have been granted.
            m = actor.member
            assert m is not None
            missing = SortedPartitionsBuilder(m.part)
            for p in grant.partitions:
                missing.exclude(p)
            for p in missing.result():
                for k in range(p.low, p.high):
                    assert self.occupied[sid].get(k, -1) >= actor.began, (
                        f"{actor.name}: key {k} of {sid} was free all along, and not granted"
                    )
        if actor.gone or not grant.partitions:
            return
        assert isinstance(grant.handle, core.Held)
        holding = Holding(actor.process, sid, grant.partitions, grant.token, grant.deadline,
                          grant.handle)  # fmt: skip
        for earlier in self.holdings:
            if earlier.section_id == sid and _overlap(earlier.ranges, holding.ranges):
                assert holding.token > earlier.token, (
                    f"token {holding.token} granted after {earlier.token} on common keys "
                    f"{earlier.ranges} / {holding.ranges} of {holding.section_id}"
                )
        self.holdings.append(holding)

    def _acquisitions(self) -> Iterator[Actor]:
        return (a for a in self.actors if a.member is not None)

    def _pending(self) -> list[Actor]:
        """Acquisitions not settled whose thread is still there."""
        return [a for a in self._acquisitions()
                if not a.gone and a.member is not None and not a.member.settled]  # fmt: skip

    # -- rules ---------------------------------------------------------------------------------

    @precondition(lambda self: len(self._pending()) < MAX_ACTIVE)
    @rule(
        process=st.integers(0, PROCESSES - 1),
        section_id=st.sampled_from(SECTIONS),
        low=st.integers(0, KEYS - 1),
        width=st.integers(1, KEYS),
        dur=st.sampled_from([0.3, 1.0, 3.0]),
    )
    def acquire(self, process: int, section_id: str, low: int, width: int, dur: float) -> None:
        p = self.processes[process]
        section = p.sections[section_id]
        p.seq += 1
        now = self.clock()
        member = core.Member(
            part=Partition(low, min(KEYS, low + width)),
            until=now + dur,
            deadline=now + dur,
            seq=p.seq,
            started=now,
            ctx=Context.background(),
            what=f"section {section_id!r} (model {p.name}#{p.seq})",
            backoff=Backoff(random.Random(p.seq)),  # the same pauses when an example is rerun
        )
        actor = Actor(f"{p.name}#{p.seq}", p, section, member=member, began=self.moment)
        actor.waiter = Waiter(member, lambda: setattr(actor, "woken", True))
        self.actors.append(actor)
        if section.gate.join(actor.waiter):
            self._wake(actor)
        self._observe()

    @rule(data=st.data(), count=st.integers(1, 4))
    def step(self, data: st.DataObject, count: int) -> None:
        """Threads perform their next operations, each call answered or failing."""
        for _ in range(count):
            runnable = [a for a in self.actors if a.op is not None or a.woken]
            if not runnable:
                return
            actor = data.draw(st.sampled_from(runnable), label="actor")
            if actor.op is None:
                self._wake(actor)
            else:
                fault = data.draw(st.sampled_from(("ok",) * 6 + FAULTS[1:]), label="fault")
                self._perform(actor, fault)
            self._observe()

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        now = self.clock()
        held = [h for h in self.holdings if not h.released and now < h.deadline + 1]
        if not held:
            return
        holding = data.draw(st.sampled_from(held), label="holding")
        holding.released = True
        section = holding.process.sections[holding.section_id]
        actor = Actor(f"release {self.names}", holding.process, section, released=holding)
        self.names += 1
        actor.steps = core.release(holding.held, holding.process.config)
        self.actors.append(actor)
        self._resume(actor, None, None)

    @rule(seconds=st.sampled_from([0.01, 0.1, 0.5, 1.5, 4.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.etcd.expire()
        # Threads waiting for their turn notice that their time is up.
        for actor in self._pending():
            m, w = actor.member, actor.waiter
            assert m is not None and w is not None
            if actor.steps is None and not actor.woken and m.done(self.clock()):
                section = actor.section
                self._run_now(actor, core.withdraw(section.known, section.gate, w,
                                                   actor.process.config))  # fmt: skip
        self._observe()

    @rule(data=st.data(), now=RARELY)
    def interrupt(self, data: st.DataObject, now: bool) -> None:
        pending = self._pending()
        if not pending or not now:
            return
        actor = data.draw(st.sampled_from(pending), label="interrupted")
        waiter, section = actor.waiter, actor.section
        assert waiter is not None
        actor.gone = True
        if actor.steps is not None:  # it leads: the exception arrives during its call
            try:
                self._resume(actor, None, Interrupt())
                while actor.steps is not None:  # what the core does on its way out
                    self._perform(actor, "ok")
            except Interrupt:
                pass
            assert isinstance(actor.error, Interrupt), "the core swallowed an interrupt"
        self._run_now(actor, core.give_up(section.known, section.gate, waiter,
                                          actor.process.config))  # fmt: skip
        self._observe()

    @rule(data=st.data(), now=RARELY)
    def cancel(self, data: st.DataObject, now: bool) -> None:
        pending = self._pending()
        if pending and now:
            actor = data.draw(st.sampled_from(pending), label="cancelled")
            assert actor.member is not None
            actor.member.ctx.cancel()

    @precondition(lambda self: bool(self.etcd.delayed))
    @rule(data=st.data())
    def apply_delayed(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.etcd.delayed) - 1), label="delayed")
        self.etcd.apply_delayed(index)

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def no_overlap(self) -> None:
        now = self.clock()
        active = [h for h in self.holdings if h.active(now)]
        for i, a in enumerate(active):
            for b in active[i + 1 :]:
                if a.section_id == b.section_id:
                    assert not _overlap(a.ranges, b.ranges), (
                        f"{a.process.name} (token {a.token}) and {b.process.name} "
                        f"(token {b.token}) both hold {a.ranges} / {b.ranges} of {a.section_id}"
                    )

    @invariant()
    def tokens_are_marker_revisions(self) -> None:
        now = self.clock()
        for h in self.holdings:
            if not h.active(now):
                continue
            key = SectionKeys.of(PREFIX, h.section_id).marker(h.held.lease.id, h.held.seq)
            kv = self.etcd.kvs.get(key)
            assert kv is not None, f"holder {h.process.name} token {h.token}: marker is gone"
            assert kv.create_revision == h.token, (
                f"token {h.token} is not its marker's create revision {kv.create_revision}"
            )

    @invariant()
    def gates_have_leaders(self) -> None:
        for p in self.processes:
            for sid, section in p.sections.items():
                gate = section.gate
                if gate.queued:
                    assert gate.leading, f"{p.name} {sid}: {gate.queued} queued, nobody leads"
                if gate.leading:
                    leaders = [a for a in self.actors if a.process is p and a.section is section
                               and a.waiter is not None and a.waiter.lead]  # fmt: skip
                    assert len(leaders) == 1, f"{p.name} {sid}: leaders {leaders}"
                    leader = leaders[0]
                    assert leader.steps is not None or leader.woken, (
                        f"{p.name} {sid}: the leader {leader.name} has no thread running"
                    )

    # -- the end -------------------------------------------------------------------------------

    def teardown(self) -> None:
        self._quiesce()
        unsettled = [a.name for a in self._acquisitions()
                     if not a.gone and not (a.member and a.member.settled)]  # fmt: skip
        assert not unsettled, f"acquisitions that never ended: {unsettled}"
        for h in self.holdings:
            if not h.released:
                h.released = True
                section = h.process.sections[h.section_id]
                actor = Actor("final release", h.process, section, released=h)
                actor.steps = core.release(h.held, h.process.config)
                self.actors.append(actor)
                self._resume(actor, None, None)
        while self.etcd.delayed:
            self.etcd.apply_delayed(0)
        self._quiesce()
        # A newcomer gets every key but those of entries whose removal met a failed call
        # (their markers expire with their etcd leases).
        newcomer = Process("newcomer", self.etcd, self.clock, share=False)
        for sid in SECTIONS:
            excused = [p for e in self._live_entries(sid) if e.owner in self.unclean
                       for p in e.ranges]  # fmt: skip
            section = newcomer.sections[sid]
            now = self.clock()
            member = core.Member(part=Partition(0, KEYS), until=now + 1, deadline=now + 1, seq=1,
                                 started=now, ctx=Context.background(), what=sid)  # fmt: skip
            waiter = Waiter(member, lambda: None)
            assert section.gate.join(waiter)
            actor = Actor("newcomer", newcomer, section, member=member, waiter=waiter)
            self._run_now(actor, core.lead(section.known, section.gate, waiter, newcomer.config))
            assert member.grant is not None, member.error
            missing = SortedPartitionsBuilder(Partition(0, KEYS))
            for p in member.grant.partitions:
                missing.exclude(p)
            for p in missing.result():
                for k in range(p.low, p.high):
                    assert any(q.low <= k < q.high for q in excused), (
                        f"{sid}: key {k} withheld from a newcomer after everything ended"
                    )

    def _live_entries(self, sid: str) -> list[section_codec.Entry]:
        keys = SectionKeys.of(PREFIX, sid)
        raw = self.etcd.kvs.get(keys.value)
        if raw is None:
            return []
        entries = section_codec.decode(sid, raw.value)
        markers = self.etcd.kvs
        return [e for e in entries if (m := markers.get(keys.marker(e.lease, e.seq))) is not None
                and m.value != TOMBSTONE]  # fmt: skip

    def _quiesce(self) -> None:
        """Run every thread to its end, every call answered; move time on when all wait."""
        for turn in range(10_000):
            runnable = [a for a in self.actors if a.op is not None or a.woken]
            if runnable:
                actor = runnable[turn % len(runnable)]
                if actor.op is None:
                    self._wake(actor)
                else:
                    self._perform(actor, "ok")
                self._observe()
            elif self._pending():
                self.advance(0.5)
            else:
                return
        looping = [(a.name, type(a.op).__name__, a.member and a.member.last_failure)
                   for a in self.actors if a.op is not None]  # fmt: skip
        raise AssertionError(f"the model did not come to rest: {looping}")


def _show(op: Op) -> str:
    from lessor.etcd.ops import Check, Swap  # noqa: PLC0415

    if isinstance(op, Swap | Check):
        snap = op.snapshot
        extra = ""
        if isinstance(op, Swap):
            live = [(e.owner, e.ranges.to_strings()) for e in op.live]
            extra = f" ours={[e.owner for e in op.ours]} live={live}"
        return (
            f"{type(op).__name__} mod={snap.mod_revision} rev={snap.revision} "
            f"relied={[e.owner for e in op.relied]}{extra}"
        )
    return repr(op)[:120]


def _overlap(a: SortedPartitions, b: SortedPartitions) -> bool:
    return any(p.overlaps(q) for p in a for q in b)


TestAcquisitionModel = AcquisitionModel.TestCase
TestAcquisitionModel.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
