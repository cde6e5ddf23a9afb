"""One attempt: a single compare-and-swap (group commit) for the members the leader took.

:func:`group_commit` settles the members it can and says whether another attempt is worth
making (it returns the retryable error it failed with). Its steps (:func:`_plan_and_commit`):

1. Take the section's state: the newest this process knows (``known.py``), or a fresh read.
2. Adopt entries of its own (:func:`_adopted`): a compare-and-swap whose reply was lost
   (timeout, failover) may have committed, and a retry must take that entry, ranges and token,
   rather than see its own ranges as somebody else's.
3. Give each member, in queue order, ``part - ranges of the live entries - what earlier
   members of this attempt get`` (``plan.py``).
4. Nothing to write: the answers stand if the state was read after every one of these
   acquisitions began; a state from before is first checked by a Txn that writes nothing.
5. Otherwise take etcd leases for the members that need one (one for all whose deadlines lie
   close) and write every entry with one compare-and-swap (:func:`_swap`, ``state.py``). It
   compares the section key's revision and the markers that the answers rest on of members
   that began after the state was read, or whose answers an earlier member's grant cut. A
   failed swap brings back the fresh state, so the next attempt needs no extra read.

**Tokens.** A grant's fencing token is the revision in the reply of the Txn that wrote it (or,
for an adopted entry, its marker's create revision, which is the same number): never a
revision taken from state other threads can change.

**Ambiguity.** Until its reply arrives, a swap may commit unbeknown to us: its writers are
marked ambiguous (``Member.ambiguous``, ``Member.lost_at``) and stay so until the swap is known
to have failed or succeeded; one that ends without a grant meanwhile is abandoned
(``abandon.py``).

**The turn.** Before a swap, the section's turn (``turn.py``) says whether to send it: while
another process holds the turn the attempt sends nothing and returns :class:`Deferred` (pause,
then read again); else the swap compares the turn as the state showed it, and a swap of a
process that keeps losing claims the turn in its failure branch. An attempt that settles
without a swap tells the turn so (``Turns.went_on``).

**Rides.** A swap also deletes the markers of the process's releases that wait aboard the gate
(``gate.py``), in either branch; a release whose swap's outcome is unknown deletes its marker
itself (``release.py``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Protocol

from lessor import observe
from lessor.contract import Grant
from lessor.errors import DeadlineExceeded, LessorError, Transient
from lessor.etcd import section
from lessor.etcd.core.abandon import abandon, fail, give_back
from lessor.etcd.core.member import Config, Conflict, Held, Member
from lessor.etcd.gate import MAX_RIDES, Ride
from lessor.etcd.keys import Owner
from lessor.etcd.known import Known, View
from lessor.etcd.leases import EtcdLease
from lessor.etcd.ops import Check, Read, RetireLease, Steps, Swap, TakeLease, Track
from lessor.etcd.plan import Plan
from lessor.etcd.retry import MIN_CALL_TIME
from lessor.etcd.state import Snapshot
from lessor.etcd.transport import LeaseNotFound, RetryableRpc

__all__ = ["LEASE_SPREAD", "MAX_DROPS", "Deferred", "SectionFull", "Stale", "group_commit"]

log = logging.getLogger("lessor")

MAX_DROPS = 16
"""Abandoned entries one swap removes at most (etcd takes 128 operations per Txn)."""

LEASE_SPREAD = 1.0
"""Members of one attempt share an etcd lease when their deadlines lie this close (seconds)."""


class Rides(Protocol):
    """Where a swap takes the releases it carries: the section's gate (``gate.py``)."""

    def take_rides(self, limit: int) -> list[Ride]: ...

    def landed(self, rides: Sequence[Ride], carried: bool) -> None: ...


class SectionFull(Transient):
    """A section already holds :data:`~lessor.etcd.plan.MAX_LIVE_LEASES` live leases."""


class Stale(Conflict):
    """The state at hand predates the acquisition and cannot settle it: read it again."""


class Deferred(Stale):
    """Another process holds the section's turn (``turn.py``): a swap now would fail. Pause
    :attr:`pause` seconds, then read again."""

    def __init__(self, pause: float) -> None:
        super().__init__()
        self.pause = pause


def group_commit(known: Known, members: Sequence[Member], config: Config, rides: Rides) -> Steps:
    """One attempt for ``members`` (in queue order): settles those it can. Returns the
    retryable error it failed with (a :class:`Conflict`, or an etcd error worth another try),
    or None. A permanent error (corrupt section, permission denied, ...) settles every member.
    A swap it sends carries the releases waiting aboard ``rides`` (the section's gate).
    """
    active = yield from _ready(known, members, config)
    if not active:
        return None
    try:
        yield from _plan_and_commit(known, active, config, rides)
    except Conflict as e:
        for m in active:
            m.last_failure = e
            if not isinstance(e, Stale):
                m.conflicts += 1
        if not isinstance(e, Deferred):  # a deferral sent no swap: nothing lost
            observe.conflict("etcd", known.keys.section_id)
        return e
    except LeaseNotFound as e:
        yield from _lease_gone(known, active, e, config)
        return e
    except RetryableRpc as e:
        for m in active:
            m.last_failure = e
        return e
    except LessorError as e:  # etcd's permanent answer: corrupt section, permission denied...
        for i, m in enumerate(active):
            if not m.settled:  # each thread raises an exception object of its own
                yield from fail(known, m, e if i == 0 else copy.copy(e), config)
    # Anything else is the leader's thread's own (a signal handler's exception, a bug): it
    # leaves through lead, and the others go back to the queue.
    return None


def _ready(known: Known, members: Sequence[Member], config: Config) -> Steps:
    """The members worth a call to etcd; those whose time is up are failed."""
    now = config.clock()
    active = []
    for m in members:
        if m.settled:
            continue
        if m.done(now):
            late = DeadlineExceeded(f"{m.what}: the deadline passed while acquiring")
            yield from fail(known, m, late, config)
        elif m.timeout(now, config) >= MIN_CALL_TIME:
            active.append(m)
        # else: too little time left to wait for etcd; it stays queued until its deadline,
        # rather than cut everyone's call short
    return active


def _lease_gone(
    known: Known, members: Sequence[Member], error: LeaseNotFound, config: Config
) -> Steps:
    """etcd refused the whole Txn for want of an etcd lease, so this swap did not commit:
    the next attempt takes new leases. An earlier swap of a member whose reply was lost still
    might (if its etcd lease is not the missing one): that one is abandoned, as at the end."""
    for m in members:
        m.last_failure = error
        if not m.settled and m.lease is not None:
            yield RetireLease(m.lease, config.rpc_timeout)
            if m.lost_at is not None:
                yield from abandon(known, m, config)
            else:
                yield from give_back(m, config)
            m.ambiguous, m.lost_at = False, None


def _plan_and_commit(
    known: Known, members: Sequence[Member], config: Config, rides: Rides
) -> Steps:
    """Steps 1 to 5 above for ``members``: settles those the state or the Txn answers. Raises
    :class:`Conflict` (:class:`Stale`) when the state did not hold, and an etcd call's error."""
    timeout = min(m.timeout(config.clock(), config) for m in members)
    view = known.view()
    if view is None:
        sent = config.clock()
        view = known.store((yield Read(timeout)), sent)
        known.turns.timed(config.clock() - sent)  # a process that only defers learns it too
    snapshot = view.snapshot
    pending = []
    for m in members:
        if not (yield from _adopted(known, snapshot, m, config)):
            pending.append(m)
    if not pending:
        known.turns.went_on()
        return
    live = known.live(snapshot)
    plan = Plan(pending, live)
    if plan.full is not None:
        if plan.full.started >= view.fetched_at:
            # Full in a state read before it began: ask etcd, the leases may have ended since.
            known.invalidate(view)
            raise Stale()
        full = SectionFull(f"{plan.full.what} holds {len(live)} live leases, the most it may hold")
        yield from fail(known, plan.full, full, config)
        return  # the others try again, after some of those leases end
    # A state read after an acquisition began is a valid answer for it as it stands (the
    # acquisition takes effect at that read); one read before must be shown to still hold:
    # the markers of the entries its answer rests on are compared too. The same clock reading
    # proves nothing (a coarse clock gives one reading to events in either order).
    relied = plan.relied(lambda m: m.started >= view.fetched_at)
    if plan.writers:
        yield from _swap(known, view, plan, live=live, relied=relied or (), timeout=timeout,
                         rides=rides, config=config)  # fmt: skip
        return
    known.turns.went_on()
    token = snapshot.revision
    if relied is not None:
        sent = config.clock()
        fresh, held = yield Check(snapshot, relied, timeout)
        known.store(fresh, sent)
        if not held:
            raise Conflict()
        token = fresh.revision
    yield from _settle(known, [(m, Grant(parts, m.until, token)) for m, parts in plan.proposals],
                       config)  # fmt: skip


def _swap(
    known: Known,
    view: View,
    plan: Plan[Member],
    *,
    live: Sequence[section.Entry],
    relied: Sequence[section.Entry],
    timeout: float,
    rides: Rides,
    config: Config,
) -> Steps:
    """Write the plan's entries with one compare-and-swap, keeping track of which writers'
    swaps may have committed without our knowing (their reply lost). The swap deletes the
    markers of the releases it takes from ``rides`` too, and tells them how it ended."""
    snapshot = view.snapshot
    turns = known.turns
    writers = [m for m, _ in plan.writers]
    # The last moment a call can be made for the earliest of the members (``_ready``), those
    # that write nothing too: their answers wait for this attempt.
    last = min(m.deadline for m, _ in plan.proposals) - MIN_CALL_TIME
    expect = turns.expect(snapshot.turn, config.clock(), last)
    if expect is None:  # another's turn: our swap would fail, and cost etcd a write
        known.invalidate(view)
        raise Deferred(turns.pause())
    claim = turns.attempt if turns.wants_claim else None  # the others' patience is told ours
    yield from _take_leases([m for m in writers if m.lease is None], timeout)
    drop = [o for o in known.abandoned.current() if o in snapshot.markers][:MAX_DROPS]
    ours = [section.Entry(_lease_of(m).id, m.seq, parts, config.holder)
            for m, parts in plan.writers]  # fmt: skip
    if claim is not None:  # on ours[0]'s etcd lease (``state.py``): it is ours, reply or not
        turns.claiming(_lease_of(writers[0]), config.clock())
    before = [m.lost_at for m in writers]
    for m in writers:  # until the reply arrives, this swap may commit unbeknown to us
        m.ambiguous, m.lost_at = True, snapshot.mod_revision
    taken: list[Ride] = []
    carried = False
    try:
        # Taken at the last moment, so that no step between here and the swap can strand them;
        # told how the swap ended whatever happens (finally), as the gate requires.
        taken = rides.take_rides(MAX_RIDES)
        sent = config.clock()
        fresh, written = yield Swap(snapshot, live, relied, ours, drop, timeout, expect, claim,
                                    released=[r.owner for r in taken])  # fmt: skip
        carried = True  # the reply came: in either branch, the markers were deleted
    except LeaseNotFound:  # refused whole: this swap did not commit
        for m, lost_at in zip(writers, before, strict=True):
            m.lost_at, m.ambiguous = lost_at, lost_at is not None
        raise
    except BaseException:
        known.invalidate(view)  # it may have committed: what we knew may be out of date
        raise
    finally:
        rides.landed(taken, carried)
    for m, lost_at in zip(writers, before, strict=True):
        m.lost_at = None if written else lost_at  # an earlier lost swap may still commit
        m.ambiguous = m.lost_at is not None
    now = config.clock()
    turns.swapped(written, fresh.turn, seconds=now - sent, now=now)
    known.store(fresh, sent)
    if not written:
        raise Conflict()
    known.abandoned.discard(*drop)
    token = fresh.revision  # the revision of this very Txn
    grants = [
        (m, Grant(parts, m.until, token, handle=Held(known, _lease_of(m), m.seq, m.until)))
        if parts
        else (m, Grant(parts, m.until, token))
        for m, parts in plan.proposals
    ]
    yield from _settle(known, grants, config)


def _take_leases(needing: Sequence[Member], timeout: float) -> Steps:
    """Etcd leases for the members that need one: one for all whose deadlines lie within
    :data:`LEASE_SPREAD` of each other (the common case: one for everyone). A member's lease
    outlives its deadline by at most that much more than its own would: after a crash, its
    ranges must not stay held for a longer-lived member's sake."""
    waiting = sorted(needing, key=lambda m: m.until, reverse=True)
    while waiting:
        until = waiting[0].until
        share = [m for m in waiting if m.until >= until - LEASE_SPREAD]
        lease = yield TakeLease(until, len(share), timeout, share[0].what)
        for m in share:
            m.lease = lease
        waiting = waiting[len(share) :]


def _adopted(known: Known, snapshot: Snapshot, m: Member, config: Config) -> Steps:
    """A swap of ``m``'s whose reply was lost may have committed: if so, ``m`` takes its entry
    (ranges and token) and is settled. Returns whether it was."""
    owner = None if m.lease is None else Owner(m.lease.id, m.seq)
    token = None if owner is None else snapshot.markers.get(owner)
    if token is None:
        if m.lost_at is not None and snapshot.mod_revision > m.lost_at:
            # The section moved on without our marker: the lost swap can never commit.
            m.ambiguous, m.lost_at = False, None
        return False
    m.ambiguous, m.lost_at = False, None
    entry = next((e for e in snapshot.entries if e.owner == owner), None)
    if entry is None:
        error = LessorError(f"{m.what}: marker of acquisition {m.seq} has no entry")
        yield from fail(known, m, error, config)
        return True
    log.info(
        "lease section=%r token=%d: adopted an entry whose commit reply was lost",
        known.keys.section_id,
        token,
    )
    held = Held(known, _lease_of(m), m.seq, m.until)
    yield from _settle(known, [(m, Grant(entry.ranges, m.until, token, handle=held))], config)
    return True


def _lease_of(m: Member) -> EtcdLease:
    assert m.lease is not None, "a writer holds an etcd lease"
    return m.lease


def _settle(known: Known, grants: Sequence[tuple[Member, Grant]], config: Config) -> Steps:
    """Settle each member with its grant. Every member is settled before the first operation
    is yielded: an exception thrown in at a yield can then leave no member whose entry was
    written unsettled (its entry would be held by nobody). Then the reaper tracks every held
    grant (one operation; ``lead.py`` tracks what an exception cut off), and an empty grant
    needs no etcd lease; if an earlier swap of its member may still commit, it is abandoned
    rather than left to hold ranges nobody uses."""
    for m, grant in grants:
        m.grant = grant
    helds = tuple(g.handle for _, g in grants if isinstance(g.handle, Held))
    if helds:
        # From here on, whatever becomes of the caller (an exception on its way out of the
        # acquisition, a release that never comes), each marker ends at its deadline.
        yield Track(helds)
    for m, grant in grants:
        if grant.handle is None:
            if m.ambiguous:
                yield from abandon(known, m, config)
            else:
                yield from give_back(m, config)
