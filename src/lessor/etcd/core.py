"""The acquisition core of the etcd lessor: every decision, and no I/O.

What to read, what to compare, what to write and who gets what are decided here, by
generators that yield operations (``ops.py``) and receive their results. The threaded shell
(``acquisition.py``, driven by ``lessor.py``) performs them over gRPC; the model-based test
(``tests/test_acquisition_model.py``) performs them on an in-memory etcd, one step at a time,
in the orders hypothesis chooses. The core reads time only from ``Config.clock``.

A process's acquisitions of one section queue at the section's gate (``gate.py``); the one
that leads makes attempts (:func:`lead`) for everyone queued, and each attempt
(:func:`attempt`):

1. Takes the section's state: the newest this process knows (``known.py``), or a fresh read.
2. Adopts entries of its own: a compare-and-swap whose reply was lost (timeout, failover) may
   have committed, and a retry must take that entry, ranges and token, rather than see its
   own ranges as somebody else's.
3. Gives each acquisition, in queue order, ``part - ranges of the live entries - what earlier
   acquisitions of this attempt get`` (``plan.py``).
4. Nothing to write: the answers stand if the state was read after every one of these
   acquisitions began; a state from before is first checked by a Txn that writes nothing.
5. Otherwise takes etcd leases for the acquisitions that need one (one for all whose deadlines
   lie close) and writes every entry with one compare-and-swap (``state.py``). It compares the
   section key's revision and the markers that the answers rest on of acquisitions that began
   after the state was read, or whose answers an earlier acquisition's grant cut. A failed
   swap brings back the fresh state, so the next attempt needs no extra read.

**Tokens.** A grant's fencing token is the revision in the reply of the Txn that wrote it (or,
for an adopted entry, its marker's create revision, which is the same number): never a
revision taken from state other threads can change.

**Ambiguity.** A swap whose reply was lost stays *ambiguous* until it is known not to have
committed (a later swap of the same acquisition succeeded, or the section moved on without
its marker): an acquisition that ends without a grant while ambiguous is abandoned, leaving a
tombstone that stops the lost swap from committing later (:func:`clean_up`).

**Departures.** An acquisition whose thread stops waiting (an exception reached it) while it is
inside an attempt is not waited for: the leader settles it when the attempt ends, and gives
back whatever the attempt granted it (:func:`orphaned`). Nothing stays held for a caller that
has gone. (A second exception on that way out, or a generator closed before its end, leaves no
more calls to make: what the departed had granted is left to the process's next swap of the
section to drop, or to its etcd lease, retired, to end: :func:`_way_out`, :func:`_forsake`.)
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lessor.context import Context
from lessor.contract import Grant
from lessor.errors import Cancelled, DeadlineExceeded, LessorError, Transient, Unavailable
from lessor.etcd import section
from lessor.etcd.gate import Gate, Waiter
from lessor.etcd.keys import Owner
from lessor.etcd.known import Known, View
from lessor.etcd.leases import EtcdLease
from lessor.etcd.ops import (
    Check,
    CleanUp,
    DeleteMarker,
    GiveBack,
    Read,
    RetireLease,
    Steps,
    Swap,
    TakeLease,
    Tombstone,
    Track,
    Wait,
)
from lessor.etcd.plan import Plan
from lessor.etcd.retry import Backoff
from lessor.etcd.state import Snapshot
from lessor.etcd.transport import LeaseNotFound, RetryableRpc
from lessor.observe import notify
from lessor.partition import Partition

__all__ = [
    "MAX_GROUP",
    "RETRYABLE",
    "Config",
    "Conflict",
    "Held",
    "Member",
    "SectionFull",
    "attempt",
    "clean_up",
    "expire",
    "fail",
    "give_up",
    "lead",
    "orphaned",
    "release",
    "withdraw",
]

log = logging.getLogger("lessor")

RETRYABLE = (RetryableRpc, LeaseNotFound)

MAX_GROUP = 32
"""The most acquisitions of one section one Txn writes for a process (group commit)."""

MIN_CALL_TIME = 0.05
"""An acquisition with less time left than this is not put in a call to etcd: it would make
the call's timeout too short for the others in the same group."""

MAX_DROPS = 16
"""Abandoned entries one swap removes at most (etcd takes 128 operations per Txn)."""

LEASE_SPREAD = 1.0
"""Members of one attempt share an etcd lease when their deadlines lie this close (seconds)."""

CLEAN_UP_PAUSE = 0.5
"""Seconds between two tries to clear an abandoned acquisition."""

RELEASE_PAUSE = 0.05
"""Seconds before a release tries the next etcd endpoint (doubling, up to a quarter second)."""


class SectionFull(Transient):
    """A section already holds :data:`~lessor.etcd.plan.MAX_LIVE_LEASES` live leases."""


class Conflict(Exception):
    """The compare-and-swap lost to another writer, or to a marker that expired."""


class Stale(Conflict):
    """The state at hand predates the acquisition and cannot settle it: read it again."""


@dataclass(frozen=True, slots=True)
class Config:
    """What the core needs to know of its lessor."""

    holder: str  # the label written with every entry
    rpc_timeout: float  # the longest any one call may take
    release_timeout: float  # the longest a release's call may take
    endpoints: int = 1  # how many etcd endpoints calls can fail over between
    clock: Callable[[], float] = field(default=time.monotonic)


class Once:
    """A claim only its first caller wins: the release and the deadline (:func:`expire`)
    race to end a holder's marker, and exactly one of them deletes it. :attr:`claimed` says
    whether it was won (a plain attribute: read on every grant's hot path)."""

    __slots__ = ("claimed",)

    _lock = threading.Lock()  # one for every claim: held for two assignments, never contended
    # for long, and a lock per grant would cost an allocation on the hot path

    def __init__(self) -> None:
        self.claimed = False

    def claim(self) -> bool:
        with Once._lock:
            first, self.claimed = not self.claimed, True
            return first


@dataclass(frozen=True, slots=True)
class Held:
    """A grant's handle: what releasing it, or ending it at its deadline, needs."""

    known: Known
    lease: EtcdLease
    seq: int
    until: float  # the grant's deadline: its marker is deleted then if it is still there
    ended: Once = field(default_factory=Once, compare=False, repr=False)
    tracked: Once = field(default_factory=Once, compare=False, repr=False)  # by the reaper

    @property
    def owner(self) -> Owner:
        return Owner(self.lease.id, self.seq)


class Member:
    """One acquisition: what it asks for, and what it carries from attempt to attempt.

    It is *settled* when it has a :attr:`grant` or an :attr:`error`; only the gate's leader
    (or, once out of the gate, its own thread) changes it.
    """

    def __init__(
        self,
        *,
        part: Partition,
        until: float,
        deadline: float,
        seq: int,
        started: float,
        ctx: Context,
        what: str,
        backoff: Backoff | None = None,
    ) -> None:
        self.part = part
        self.until = until  # the grant's deadline
        self.deadline = deadline  # no call for it after this (at most ``until``)
        self.seq = seq
        self.started = started
        self.ctx = ctx  # the caller's: its cancellation ends the acquisition
        self.what = what
        self.lease: EtcdLease | None = None
        self.ambiguous = False  # a swap may have committed without our hearing of it
        # The section's mod revision that the last swap whose reply was lost compared against:
        # that swap can still commit while the section stays there.
        self.lost_at: int | None = None
        self.conflicts = 0
        self.last_failure: BaseException | None = None
        self.backoff = backoff if backoff is not None else Backoff()
        self.grant: Grant | None = None
        self.error: BaseException | None = None

    @property
    def settled(self) -> bool:
        return self.grant is not None or self.error is not None

    def done(self, now: float) -> bool:
        """Its time is up, or its caller cancelled."""
        return now >= self.deadline or self.ctx.err is not None

    def timeout(self, now: float, config: Config) -> float:
        """How long a call made for it may take (0 when its time is up)."""
        remaining = 0.0 if self.ctx.err is not None else max(0.0, self.deadline - now)
        return _call_timeout(remaining, config)

    def failure(self, error: BaseException) -> BaseException:
        """What to raise when no attempt succeeded, given the last error."""
        if isinstance(self.ctx.err, Cancelled):
            return Cancelled(f"{self.what}: cancelled while acquiring a lease")
        if not isinstance(error, (Conflict, *RETRYABLE, DeadlineExceeded)):
            return error  # permanent: corrupt section, permission denied, ...
        if isinstance(self.last_failure, RetryableRpc):
            return Unavailable(
                f"{self.what}: etcd did not answer before the deadline: {self.last_failure}"
            )
        if self.conflicts:
            return DeadlineExceeded(
                f"{self.what}: no lease before the deadline; {self.conflicts} compare-and-swap "
                "attempts lost to other writers"
            )
        if isinstance(error, DeadlineExceeded):
            return error  # it says where the time went
        return DeadlineExceeded(f"{self.what}: the deadline passed while acquiring a lease")


def _call_timeout(remaining: float, config: Config) -> float:
    """How long one call may take with ``remaining`` seconds left for the whole operation.
    With other endpoints to try, never all of it: a member that accepts a call and never
    answers (paused, or forwarding to a dead leader) must leave time to ask another."""
    remaining = max(0.0, remaining)
    if config.endpoints > 1 and remaining > 0.4:
        remaining /= 2
    return min(config.rpc_timeout, remaining)


# -- the leader ----------------------------------------------------------------------------


def lead(known: Known, gate: Gate[Member], me: Waiter[Member], config: Config) -> Steps:
    """Make attempts for the queue until ``me`` is settled, then hand the lead on.

    If an exception reaches the leader's thread inside an attempt, ``me`` departs and the
    attempt's other members go back to the queue, whose next leader carries on for them.
    """
    m = me.item
    try:
        while True:
            batch = gate.take(MAX_GROUP)
            try:
                failed = yield from attempt(known, [w.item for w in batch], config)
                departed = gate.finish(batch)
            except GeneratorExit:  # closed unfinished: no more calls can be made
                gate.leave(me)
                for w in gate.finish(batch):
                    _forsake(known, w.item)
                raise
            except BaseException:
                gate.leave(me)  # the leader's thread alone is interrupted
                departed = gate.finish(batch)
                staying = [w for w in batch if w not in departed]
                yield from _way_out(known, staying, departed, config)
                raise
            yield from _orphans(known, departed, config)
            if m.settled:
                return
            now = config.clock()
            if m.done(now):
                late = DeadlineExceeded(f"{m.what}: the deadline passed while acquiring a lease")
                yield from fail(known, m, failed if failed is not None else late, config)
                return
            remaining = m.deadline - now
            if failed is None or isinstance(failed, Conflict):
                # None: the attempt settled others but not us (too many at once).
                pause = m.backoff.after_conflict(remaining)
            else:
                pause = m.backoff.after_transient(remaining)
            yield Wait(pause, m.ctx)
    finally:
        gate.hand_over(me)


def _forsake(known: Known, m: Member) -> None:
    """``m`` departed and no call can be made for it any more: whatever it was granted, or a
    swap of its that may have committed, is left for this process's next swap of the section
    to drop, or for its etcd lease to end: the lease is retired (no op can be yielded here, so
    its flag is set directly), for a renewal would keep that marker alive."""
    if m.lease is None:
        return
    m.lease.retired = True
    if m.grant is not None and isinstance(m.grant.handle, Held):
        known.abandoned.add(m.grant.handle.owner)
    elif m.ambiguous:
        known.abandoned.add(Owner(m.lease.id, m.seq))


def _way_out(
    known: Known,
    staying: Sequence[Waiter[Member]],
    departed: Sequence[Waiter[Member]],
    config: Config,
) -> Steps:
    """The leader's way out of an attempt that an exception cut short: track the grants the
    exception kept from the reaper (those of members still waiting: their threads take them),
    and give back what the departed were granted.

    A second exception thrown in here (a second Ctrl-C) ends the calls: the departed members
    not yet given back are forsaken (:func:`_forsake`), and a staying member's grant is
    tracked by its own thread on its way out of the acquisition (the shell tracks every grant
    it returns), so nothing is left that neither a release, the reaper nor a retired etcd
    lease ends."""
    left = list(departed)
    try:
        if _untracked(staying):
            yield Track(_untracked(staying))
        while left:
            yield from orphaned(known, left[0].item, config)
            del left[0]
    except BaseException:
        for w in left:
            _forsake(known, w.item)
        raise


def _orphans(known: Known, departed: Sequence[Waiter[Member]], config: Config) -> Steps:
    for w in departed:
        yield from orphaned(known, w.item, config)


def attempt(known: Known, members: Sequence[Member], config: Config) -> Steps:
    """One attempt for ``members`` (in queue order): settles those it can. Returns the
    retryable error it failed with (a :class:`Conflict`, or an etcd error worth another try),
    or None. A permanent error (corrupt section, permission denied, ...) settles every member.
    """
    active = yield from _ready(known, members, config)
    if not active:
        return None
    try:
        yield from _attempt(known, active, config)
    except Conflict as e:
        for m in active:
            m.last_failure = e
            if not isinstance(e, Stale):
                m.conflicts += 1
        notify("conflict", "etcd", known.keys.section_id)
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
                yield from _abandon(known, m, config)
            else:
                yield from _give_back(m, config)
            m.ambiguous, m.lost_at = False, None


def _attempt(known: Known, members: Sequence[Member], config: Config) -> Steps:
    timeout = min(m.timeout(config.clock(), config) for m in members)
    view = known.view()
    if view is None:
        sent = config.clock()
        view = known.store((yield Read(timeout)), sent)
    snapshot = view.snapshot
    pending = []
    for m in members:
        if not (yield from _adopted(known, snapshot, m, config)):
            pending.append(m)
    if not pending:
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
        yield from _swap(
            known, view, plan, live=live, relied=relied or (), timeout=timeout, config=config
        )
        return
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
    config: Config,
) -> Steps:
    """Write the plan's entries with one compare-and-swap, keeping track of which writers'
    swaps may have committed without our knowing (their reply lost)."""
    snapshot = view.snapshot
    writers = [m for m, _ in plan.writers]
    yield from _take_leases([m for m in writers if m.lease is None], timeout)
    drop = [o for o in known.abandoned.current() if o in snapshot.markers][:MAX_DROPS]
    ours = [section.Entry(_lease_of(m).id, m.seq, parts, config.holder)
            for m, parts in plan.writers]  # fmt: skip
    before = [m.lost_at for m in writers]
    for m in writers:  # until the reply arrives, this swap may commit unbeknown to us
        m.ambiguous, m.lost_at = True, snapshot.mod_revision
    sent = config.clock()
    try:
        fresh, written = yield Swap(snapshot, live, relied, ours, drop, timeout)
    except LeaseNotFound:  # refused whole: this swap did not commit
        for m, lost_at in zip(writers, before, strict=True):
            m.lost_at, m.ambiguous = lost_at, lost_at is not None
        raise
    except BaseException:
        known.invalidate(view)  # it may have committed: what we knew may be out of date
        raise
    for m, lost_at in zip(writers, before, strict=True):
        m.lost_at = None if written else lost_at  # an earlier lost swap may still commit
        m.ambiguous = m.lost_at is not None
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


# -- the end of an acquisition -------------------------------------------------------------


def _settle(known: Known, grants: Sequence[tuple[Member, Grant]], config: Config) -> Steps:
    """Settle each member with its grant. Every member is settled before the first operation
    is yielded: an exception thrown in at a yield can then leave no member whose entry was
    written unsettled (its entry would be held by nobody). Then the reaper tracks every held
    grant (one operation; :func:`lead` tracks what an exception cut off), and an empty grant
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
                yield from _abandon(known, m, config)
            else:
                yield from _give_back(m, config)


def _untracked(waiters: Sequence[Waiter[Member]]) -> tuple[Held, ...]:
    return tuple(
        w.item.grant.handle
        for w in waiters
        if w.item.grant is not None
        and isinstance(w.item.grant.handle, Held)
        and not w.item.grant.handle.tracked.claimed
    )


def fail(known: Known, m: Member, error: BaseException, config: Config) -> Steps:
    """Settle ``m`` without a grant (``error`` was the last outcome): leave nothing held."""
    m.error = m.failure(error)
    yield from _abandon(known, m, config)


def orphaned(known: Known, m: Member, config: Config) -> Steps:
    """``m``'s thread left while ``m`` was inside an attempt: give back what it got."""
    grant = m.grant
    if grant is not None and isinstance(grant.handle, Held):
        yield CleanUp(_release_quietly(grant.handle, config))
    elif not m.settled:
        # Not reached by the attempt (too little time left, or the leader was interrupted
        # first): it holds no grant, but an earlier swap of its own may still commit.
        yield from fail(known, m, Cancelled(f"{m.what}: acquisition interrupted"), config)


def _give_back(m: Member, config: Config) -> Steps:
    lease, m.lease = m.lease, None
    if lease is not None:
        yield GiveBack(lease, config.rpc_timeout)


def _abandon(known: Known, m: Member, config: Config) -> Steps:
    """``m`` ends without ranges: leave nothing held, even if its last swap did commit. The
    clean-up runs apart: the caller's time is up or its error is final, and etcd may be the
    very thing that is not answering."""
    lease, m.lease = m.lease, None
    if lease is None:
        return
    if m.ambiguous:
        owner = Owner(lease.id, m.seq)
        known.abandoned.add(owner)
        yield CleanUp(clean_up(known, owner, lease, config))
    else:
        yield CleanUp(_give_back_lease(lease, config))


def _give_back_lease(lease: EtcdLease, config: Config) -> Steps:
    yield GiveBack(lease, config.rpc_timeout)


def clean_up(known: Known, owner: Owner, lease: EtcdLease, config: Config) -> Steps:
    """Make sure an abandoned acquisition holds nothing: its swap may commit long after we
    gave up (a leader that kept it in its log commits it when quorum returns), so keep trying
    while the etcd lease lives."""
    try:
        yield from _tombstone(known, owner, lease, config)
    finally:
        known.abandoned.discard(owner)
    yield GiveBack(lease, config.rpc_timeout)


def _tombstone(known: Known, owner: Owner, lease: EtcdLease, config: Config) -> Steps:
    """Tombstone ``owner``, trying again while the etcd lease lives. After the first failure
    the lease is retired: whatever the swap wrote must end with it, and a renewal for another
    acquisition would otherwise keep it alive (and keep this loop going) indefinitely."""
    while True:
        try:
            yield Tombstone(owner, config.rpc_timeout)
            return
        except LeaseNotFound:
            return  # the etcd lease is gone: so is anything the swap wrote
        except RetryableRpc as e:
            failure: Exception = e
        except LessorError as e:
            failure = e
        yield RetireLease(lease, config.rpc_timeout)
        if isinstance(failure, LessorError) or config.clock() + CLEAN_UP_PAUSE >= lease.expiry:
            log.warning(
                "section=%r: could not clear an abandoned acquisition; it ends with its etcd "
                "lease %x, %.1fs from now at most: %s",
                known.keys.section_id,
                lease.id,
                max(0.0, lease.expiry - config.clock()),
                failure,
            )
            return
        yield Wait(CLEAN_UP_PAUSE)


def release(held: Held, config: Config) -> Steps:
    """Give back a grant: its entry is dead to this process at once (its next swap drops it),
    and to everyone once its marker is deleted, here or, for a holder that overran, already at
    its deadline (:func:`expire`). The deletion fails over across etcd's members within the
    release timeout. The etcd lease is given back whatever the deletion's outcome; a deletion
    that failed retires the lease first (a renewal would keep the marker alive), and is
    raised after that as one :class:`~lessor.errors.Unavailable` that says when the ranges
    come free."""
    held.known.release(held.owner)
    lease = held.lease
    failure: BaseException | None = None
    ends_marker = held.ended.claim()  # False: expire deleted it (or is deleting it)
    # The last user of a retired lease gives it back, which revokes it, and the marker goes
    # with it: one write instead of two.
    by_revoke = ends_marker and lease.retired and lease.users == 1
    try:
        if ends_marker and not by_revoke:
            failure = yield from _delete_marker(held, config)
    except GeneratorExit:
        raise
    except BaseException as e:  # the thread's own (KeyboardInterrupt, ...): delete it apart
        failure = e
        yield CleanUp(_delete_quietly(held, config))
    try:
        revoked = yield GiveBack(lease, config.release_timeout)
    except GeneratorExit:
        raise
    except BaseException as e:
        if by_revoke and not isinstance(e, (LessorError, *RETRYABLE)):
            yield CleanUp(_delete_quietly(held, config))  # the revoke may not have been sent
        raise
    if isinstance(failure, (LessorError, *RETRYABLE)):
        if revoked is True and lease.revoked:
            return  # the retired lease's last user gave it back: the marker went with it
        raise _undeleted(held, failure, config)
    if failure is not None:
        raise failure
    if by_revoke and revoked is False:
        raise Unavailable(
            f"section {held.known.keys.section_id!r}: could not revoke etcd lease "
            f"{lease.id:x}; the lease's marker lives until the lease expires"
        )


def expire(held: Held, config: Config) -> Steps:
    """``held``'s deadline has passed and its holder has not released it (its callback still
    runs): delete its marker now, so that its ranges come free at the deadline, not when the
    callback ends. (A renewal of the shared etcd lease for a later acquisition would keep the
    marker alive past it.) The holder's release then only gives the etcd lease back.

    A deletion that fails retires the lease: the marker ends with it, at its TTL."""
    if not held.ended.claim():
        return  # released already
    held.known.release(held.owner)
    failure = yield from _delete_marker(held, config)
    if failure is not None:
        log.warning("%s", _undeleted(held, failure, config))


def _delete_marker(held: Held, config: Config) -> Steps:
    """Delete ``held``'s marker, trying the next etcd endpoint after each failure, until the
    release timeout runs out. Returns None, or the error that ended the tries: etcd's
    permanent refusal, or the last of the failures.

    The first failure retires the etcd lease at once, not after the last: from then on no
    renewal (for this process's next acquisitions) extends the marker, so if the tries all
    fail it ends at the lease's TTL as it stood then. (A renewal already on its way may still
    land: see :meth:`~lessor.etcd.leases.LeasePool.take`.)"""
    give_up_at = config.clock() + config.release_timeout
    pause = RELEASE_PAUSE
    retired = False
    while True:
        timeout = _call_timeout(give_up_at - config.clock(), config)
        try:
            yield DeleteMarker(held.owner, timeout)
            return None
        except RetryableRpc as e:
            failure: Exception = e
        except LessorError as e:
            failure = e
        if not retired:
            retired = True
            yield RetireLease(held.lease, config.release_timeout)
        if isinstance(failure, LessorError) or config.clock() + pause + MIN_CALL_TIME > give_up_at:
            return failure
        yield Wait(pause)
        pause = min(2 * pause, 0.25)


def _undeleted(held: Held, error: BaseException, config: Config) -> Unavailable:
    lease = held.lease
    return Unavailable(
        f"section {held.known.keys.section_id!r}: could not delete the marker of acquisition "
        f"{held.seq} within the release timeout; its ranges stay held until etcd lease "
        f"{lease.id:x} expires, {max(0.0, lease.expiry - config.clock()):.1f}s from now at "
        f"most, or is revoked: {error}"
    )


def withdraw(known: Known, gate: Gate[Member], waiter: Waiter[Member], config: Config) -> Steps:
    """``waiter``'s time ran out while it waited for its turn. Returns True when it left the
    queue and is settled; False when it is inside an attempt, which settles it (and is bounded
    by its deadline too), or is already settled."""
    if not gate.withdraw(waiter):
        return False
    m = waiter.item
    late = DeadlineExceeded(
        f"{m.what}: the deadline passed while this process's other acquisitions of the "
        "section went first"
    )
    yield from fail(known, m, late, config)
    return True


def give_up(known: Known, gate: Gate[Member], waiter: Waiter[Member], config: Config) -> Steps:
    """An exception (KeyboardInterrupt, ...) reached ``waiter``'s thread while it acquired.
    Out of the gate, its acquisition is its own to end here; inside an attempt, the leader
    ends it (:func:`orphaned`): nobody waits for it."""
    if not gate.leave(waiter):
        return
    m = waiter.item
    if m.grant is not None:
        if isinstance(m.grant.handle, Held):
            yield from _release_quietly(m.grant.handle, config)
    elif m.error is None:
        yield from fail(known, m, Cancelled(f"{m.what}: acquisition interrupted"), config)


def _delete_quietly(held: Held, config: Config) -> Steps:
    failure = yield from _delete_marker(held, config)
    if failure is not None:
        log.warning("%s", _undeleted(held, failure, config))


def _release_quietly(held: Held, config: Config) -> Steps:
    try:
        yield from release(held, config)
    except (LessorError, *RETRYABLE) as e:
        log.warning("section=%r: could not give back an interrupted acquisition's lease: %s",
                    held.known.keys.section_id, e)  # fmt: skip
