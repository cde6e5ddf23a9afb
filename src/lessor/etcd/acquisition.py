"""Acquisitions of the etcd lessor, and the attempt that serves several of them at once.

A process's acquisitions of one section queue at the section's gate (gate.py); the leader
makes an attempt for all of them (:meth:`Section.attempt`):

1. Takes the section's state: the one the process cached, or a fresh read.
2. Adopts entries of its own: a compare-and-swap whose reply was lost (timeout, failover) may
   have committed, and a retry must take that entry, ranges and token, rather than see its
   own ranges as somebody else's.
3. Gives each acquisition, in queue order, ``part - ranges of the live entries - what earlier
   acquisitions of this attempt get``.
4. Nothing to write: the answers stand if the state was read after every one of these
   acquisitions began; a state cached from before is first checked by a Txn that writes
   nothing.
5. Otherwise takes one etcd lease for the acquisitions that need one (leases.py) and writes
   every entry with one compare-and-swap (state.py). It compares the section key's revision,
   and, for acquisitions that began after the state was read, the markers their answers rest
   on. A failed swap brings back the fresh state, so the next attempt needs no extra read.

Between attempts: after a lost swap, only a jitter of a millisecond or two (the fresh state is
in hand, and a loser that backed off for longer would fall behind the newcomers and could
starve); after a transient error, randomised exponential back-off. No attempt is made past an
acquisition's own deadline.

A swap whose reply was lost stays *ambiguous* until it is known not to have committed (a later
swap of the same acquisition succeeded, or the section moved on without its marker): an
acquisition that ends without a grant while ambiguous is abandoned, leaving a tombstone that
stops the lost swap from committing later.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tenacity import RetryCallState, wait_random, wait_random_exponential

from lessor.context import Context
from lessor.contract import Grant
from lessor.errors import Cancelled, DeadlineExceeded, LessorError, Transient, Unavailable
from lessor.etcd import section
from lessor.etcd.gate import Gate
from lessor.etcd.leases import EtcdLease, LeasePool
from lessor.etcd.state import SectionTxns, Snapshot
from lessor.etcd.transport import LeaseNotFound, RetryableRpc
from lessor.observe import notify
from lessor.partition import Partition, SortedPartitions, SortedPartitionsBuilder

__all__ = [
    "MAX_LIVE_LEASES",
    "RETRYABLE",
    "Acquisition",
    "Backoff",
    "Conflict",
    "Held",
    "SectionFull",
]

log = logging.getLogger("lessor")

MAX_LIVE_LEASES = 100
"""Live leases one section may hold at once: the value and the Txn must stay bounded."""

RETRYABLE = (RetryableRpc, LeaseNotFound)

MAX_DROPS = 16
"""Abandoned entries one swap removes at most (etcd takes 128 operations per Txn)."""


class SectionFull(Transient):
    """A section already holds :data:`MAX_LIVE_LEASES` live leases."""


class Abandoned:
    """This process's acquisitions of one section that gave up while their swap might still
    commit (its reply was lost; a leader may commit it when quorum returns).

    Their entries are the process's own to discard: its next swap of the section drops them
    and deletes their markers, so the ranges come back at once rather than when a clean-up
    call gets through or the etcd lease expires.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owners: set[tuple[int, int]] = set()

    def add(self, owner: tuple[int, int]) -> None:
        with self._lock:
            self._owners.add(owner)

    def discard(self, *owners: tuple[int, int]) -> None:
        with self._lock:
            self._owners.difference_update(owners)

    def current(self) -> frozenset[tuple[int, int]]:
        with self._lock:
            return frozenset(self._owners)


class Conflict(Exception):
    """The compare-and-swap lost to another writer, or to a marker that expired."""


@dataclass(frozen=True, slots=True)
class Held:
    """A grant's handle: what releasing it needs."""

    txns: SectionTxns
    lease: EtcdLease
    seq: int


class Acquisition:
    """One ``_acquire`` call: what it asks for, and what it carries from attempt to attempt.

    Attempts are made for several acquisitions at once (:class:`Section`); an acquisition is
    *settled* when it has a :attr:`grant` or an :attr:`error`.
    """

    def __init__(
        self,
        txns: SectionTxns,
        pool: LeasePool,
        *,
        part: Partition,
        until: float,
        seq: int,
        holder: str,
        ctx: Context,
        caller: Context | None = None,
        rpc_timeout: float,
        endpoints: int = 1,
        abandoned: Abandoned | None = None,
    ) -> None:
        self.txns = txns
        self.pool = pool
        self.part = part
        self.until = until  # the grant's deadline
        self.seq = seq
        self.holder = holder
        self.ctx = ctx  # the caller's, limited by the grant's deadline and acquire_timeout
        self.caller = caller if caller is not None else ctx
        self.rpc_timeout = rpc_timeout
        self.endpoints = endpoints
        self.abandoned = abandoned if abandoned is not None else Abandoned()
        self.started = time.monotonic()
        self.lease: EtcdLease | None = None
        self.ambiguous = False  # a swap may have committed without our hearing of it
        # The section's mod revision that the last swap whose reply was lost compared against:
        # that swap can still commit while the section stays there.
        self.lost_at: int | None = None
        self.conflicts = 0
        self.last_failure: Exception | None = None
        self.grant: Grant | None = None
        self.error: BaseException | None = None
        self.what = f"section {txns.keys.section_id!r}"

    @property
    def settled(self) -> bool:
        return self.grant is not None or self.error is not None

    def settle_failed(self, error: BaseException) -> None:
        """No attempt succeeded (``error`` was the last outcome): leave nothing held."""
        self.abandon()
        self.error = self.failure(error, self.caller)

    def _adopt(self, snapshot: Snapshot, token: int) -> Grant:
        lease = self.lease
        assert lease is not None
        self.ambiguous, self.lost_at = False, None
        for entry in snapshot.entries:
            if entry.owner == (lease.id, self.seq):
                log.info(
                    "lease section=%r token=%d: adopted an entry whose commit reply was lost",
                    self.txns.keys.section_id,
                    token,
                )
                return Grant(
                    entry.ranges, self.until, token, handle=Held(self.txns, lease, self.seq)
                )
        raise LessorError(f"{self.what}: marker of acquisition {self.seq} has no entry")

    def timeout(self) -> float:
        """How long a call made for this acquisition may take (0 when its time is up). With
        other endpoints to try, never all the time that is left: a member that accepts a call
        and never answers (paused, or forwarding to a dead leader) must leave time to ask
        another."""
        remaining = max(0.0, self.ctx.remaining())
        if self.endpoints > 1 and remaining > 0.4:
            remaining /= 2
        return min(self.rpc_timeout, remaining)

    # -- the end -----------------------------------------------------------------------------

    def finish(self, grant: Grant) -> None:
        """Settle with ``grant``. An empty grant needs no etcd lease; if an earlier swap of
        ours may still commit, it is abandoned rather than left to hold ranges nobody uses."""
        if grant.handle is None:
            if self.ambiguous:
                self.abandon()
            else:
                self._drop_lease()
        self.grant = grant

    def abandon(self) -> None:
        """The acquisition failed: leave nothing held, even if its last swap did commit.

        The clean-up runs in a thread of its own: the caller's deadline has passed or its
        error is final, and etcd may be the very thing that is not answering.
        """
        if self.lease is None:
            return
        lease, ambiguous = self.lease, self.ambiguous
        self.lease = None
        owner = (lease.id, self.seq)
        if ambiguous:
            self.abandoned.add(owner)

        def clean_up() -> None:
            # The swap may commit long after we gave up (a leader that kept it in its log
            # commits it when quorum returns), so keep trying while the etcd lease lives.
            pause = Context.background()
            try:
                while ambiguous:
                    try:
                        self.txns.abandon(lease.id, self.seq, self.rpc_timeout)
                        return
                    except LeaseNotFound:
                        return  # the etcd lease is gone: so is anything the swap wrote
                    except RetryableRpc as e:
                        if time.monotonic() + 0.5 >= lease.expiry:
                            log.warning(
                                "section=%r: could not clear an abandoned acquisition before "
                                "its etcd lease expires (which frees it): %s",
                                self.txns.keys.section_id,
                                e,
                            )
                            return
                        pause.wait(0.5)
            except LessorError as e:
                log.warning("section=%r: could not clear an abandoned acquisition: %s",
                            self.txns.keys.section_id, e)  # fmt: skip
            finally:
                self.abandoned.discard(owner)
                self.pool.give_back(lease, self.rpc_timeout)

        threading.Thread(target=clean_up, name="lessor abandon", daemon=True).start()

    def _drop_lease(self, forget: bool = False) -> None:
        lease, self.lease = self.lease, None
        if lease is not None:
            if forget:
                self.pool.forget(lease)
            self.pool.give_back(lease, self.rpc_timeout)

    def failure(self, error: BaseException, caller: Context) -> BaseException:
        """What to raise when no attempt succeeded, given the last error."""
        if isinstance(caller.err, Cancelled):
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


class Section:
    """What a lessor keeps per section: its Txns, its gate, the last state it saw, and its
    abandoned acquisitions; and the attempt that serves several acquisitions with one Txn.

    The state is read and replaced only by the gate's leader; a release (outside the gate)
    only marks its own entry dead. If that races with an attempt storing its state, the entry
    stays "live" in the cache, which is then older than the acquisitions that follow: their
    swap or check compares that entry's marker, fails once, and brings the fresh state. A
    stale cache costs a retry, never a wrong answer.
    """

    def __init__(self, txns: SectionTxns, pool: LeasePool, holder: str) -> None:
        self.txns = txns
        self.pool = pool
        self.holder = holder
        self.gate: Gate[Acquisition] = Gate()
        self.abandoned = Abandoned()
        self.snapshot: Snapshot | None = None
        self.fetched_at = 0.0  # monotonic time at which the snapshot's Txn was sent
        self._lock = threading.Lock()

    def forget(self, lease: int, seq: int) -> None:
        with self._lock:
            if self.snapshot is not None:
                self.snapshot = self.snapshot.without((lease, seq))

    def attempt(self, members: Sequence[Acquisition]) -> None:
        """One attempt for ``members`` (in queue order, none of them done): settles those it
        can; raises :class:`Conflict` or a retryable error when the Txn settled none."""
        try:
            self._attempt(members)
        except Conflict as e:
            for m in members:
                m.last_failure = e
                m.conflicts += 1
            notify("conflict", "etcd", self.txns.keys.section_id)
            raise
        except LeaseNotFound as e:
            # etcd refused the whole Txn, so this swap did not commit: retry with new etcd
            # leases. An earlier swap of a member whose reply was lost still might (if its
            # etcd lease is not the missing one): that one is abandoned, as at the end.
            for m in members:
                m.last_failure = e
                if not m.settled and m.lease is not None:
                    self.pool.forget(m.lease)
                    if m.lost_at is not None:
                        m.abandon()
                    else:
                        m._drop_lease()
                    m.ambiguous, m.lost_at = False, None
            raise
        except RetryableRpc as e:
            for m in members:
                m.last_failure = e
            self.snapshot = None  # unknown now: read afresh, maybe adopt
            raise

    def _attempt(self, members: Sequence[Acquisition]) -> None:
        if self.snapshot is None:
            sent = time.monotonic()
            self.snapshot = self.txns.read(_timeout(members))
            self.fetched_at = sent
        snapshot = self.snapshot
        pending = [m for m in members if not self._adopted(snapshot, m)]
        if not pending:
            return
        gone = self.abandoned.current()
        live = [e for e in snapshot.live() if e.owner not in gone]
        plan = _Plan(pending, live)
        if plan.full is not None:
            plan.full.settle_failed(
                SectionFull(f"{plan.full.what} holds {len(live)} live leases, the most it may hold")
            )
            return  # the others try again, after some of those leases end
        # A state read after an acquisition began is a valid answer for it as it stands (the
        # acquisition takes effect at that read); one cached from before must be shown to
        # still hold: the markers of the entries its answer rests on are compared too.
        relied = plan.relied(lambda m: m.started > self.fetched_at)
        if not plan.writers:
            if relied is not None:
                sent = time.monotonic()
                self.snapshot, ok = self.txns.check(snapshot, relied, _timeout(members))
                self.fetched_at = sent
                if not ok:
                    raise Conflict()
            self._settle(plan.proposals, self.snapshot.revision)
            return
        writers = [m for m, _ in plan.writers]
        needing = [m for m in writers if m.lease is None]
        if needing:  # one etcd lease for all of them, living past the latest deadline
            lease = self.pool.take(
                max(m.until for m in needing),
                _timeout(members),
                needing[0].what,
                users=len(needing),
            )
            for m in needing:
                m.lease = lease
        drop = [owner for owner in gone if owner in snapshot.markers][:MAX_DROPS]
        if not self._swap(plan, live, relied or (), drop, _timeout(members)):
            raise Conflict()
        self.abandoned.discard(*drop)
        self._settle(plan.proposals, self.snapshot.revision)

    def _swap(
        self,
        plan: _Plan,
        live: Sequence[section.Entry],
        relied: Sequence[section.Entry],
        drop: Sequence[tuple[int, int]],
        timeout: float,
    ) -> bool:
        """The plan's compare-and-swap, keeping track of which writers' swaps may still
        commit without our knowing (their reply lost)."""
        snapshot = self.snapshot
        assert snapshot is not None
        writers = [m for m, _ in plan.writers]
        ours = [section.Entry(_lease_of(m).id, m.seq, parts, self.holder)
                for m, parts in plan.writers]  # fmt: skip
        before = [m.lost_at for m in writers]
        for m in writers:  # until the reply arrives, this swap may commit unbeknown to us
            m.ambiguous, m.lost_at = True, snapshot.mod_revision
        sent = time.monotonic()
        ok: bool | None = None  # None: no reply (a retryable error), so still ambiguous
        try:
            self.snapshot, ok = self.txns.swap(snapshot, live, relied, ours, timeout, drop=drop)
        except LeaseNotFound:  # refused whole: this swap did not commit
            ok = False
            raise
        finally:
            if ok is not None:
                for m, lost_at in zip(writers, before, strict=True):
                    m.lost_at = None if ok else lost_at  # an earlier lost swap may still commit
                    m.ambiguous = m.lost_at is not None
        self.fetched_at = sent
        return bool(ok)

    @staticmethod
    def _adopted(snapshot: Snapshot, m: Acquisition) -> bool:
        """A swap of ``m``'s whose reply was lost may have committed: if so, ``m`` takes its
        entry (ranges and token) and is settled."""
        token = None if m.lease is None else snapshot.markers.get((m.lease.id, m.seq))
        if token is None:
            if m.lost_at is not None and snapshot.mod_revision > m.lost_at:
                # The section moved on without our marker: the lost swap can never commit.
                m.ambiguous, m.lost_at = False, None
            return False
        m.finish(m._adopt(snapshot, token))
        return True

    def _settle(
        self, proposals: Sequence[tuple[Acquisition, SortedPartitions]], token: int
    ) -> None:
        for m, parts in proposals:
            held = Held(self.txns, _lease_of(m), m.seq) if parts else None
            m.finish(Grant(parts, m.until, token, handle=held))


def _timeout(members: Sequence[Acquisition]) -> float:
    """A call for several acquisitions may take as long as the most pressed of them may wait."""
    return min(m.timeout() for m in members)


def _lease_of(m: Acquisition) -> EtcdLease:
    assert m.lease is not None, "a writer holds an etcd lease"
    return m.lease


class _Plan:
    """What one attempt gives whom: members in queue order, each the part of what it asks
    that neither a live entry nor an earlier member holds."""

    def __init__(self, pending: Sequence[Acquisition], live: Sequence[section.Entry]) -> None:
        self.proposals: list[tuple[Acquisition, SortedPartitions]] = []
        self.writers: list[tuple[Acquisition, SortedPartitions]] = []
        self.full: Acquisition | None = None  # refused: the section holds too many leases
        self._relied: list[tuple[Acquisition, list[section.Entry]]] = []
        room = MAX_LIVE_LEASES - len(live)
        taken: list[Partition] = []
        for m in pending:
            free = SortedPartitionsBuilder(m.part)
            relied = [e for e in live if any(p.overlaps(m.part) for p in e.ranges)]
            for entry in relied:
                for p in entry.ranges:
                    free.exclude(p)
            for p in taken:
                free.exclude(p)
            parts = free.result()
            if parts and len(self.writers) >= room:
                if not self.writers:
                    self.full = m
                return  # this one and the rest wait for the next attempt
            self.proposals.append((m, parts))
            self._relied.append((m, relied))
            if parts:
                self.writers.append((m, parts))
                taken.extend(parts)

    def relied(self, unproven: Callable[[Acquisition], bool]) -> list[section.Entry] | None:
        """The entries that the answers of the ``unproven`` members rest on; None when no
        member is unproven."""
        found: dict[tuple[int, int], section.Entry] = {}
        any_unproven = False
        for m, entries in self._relied:
            if unproven(m):
                any_unproven = True
                found.update((e.owner, e) for e in entries)
        return list(found.values()) if any_unproven else None


class Backoff:
    """Tenacity's wait: a jitter after a lost swap, randomised exponential back-off after a
    transient error; never past the deadline."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._jitter = wait_random(0, 0.002)
        self._exponential = wait_random_exponential(multiplier=0.01, max=0.5)

    def __call__(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        wait = self._jitter if isinstance(error, Conflict) else self._exponential
        return min(wait(state), self._ctx.remaining())
