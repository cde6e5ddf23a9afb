"""One acquisition of the etcd lessor, across its attempts.

An attempt:

1. Takes the section's state: the one the process cached, or a fresh read.
2. Adopts its own entry if the state holds one: a compare-and-swap whose reply was lost
   (timeout, failover) may have committed, and a retry must take that entry, ranges and
   token, rather than see its own ranges as somebody else's.
3. Computes ``free = part - ranges of the live entries that overlap part``.
4. Nothing free: the answer stands if the state was read during this acquisition; a cached
   state is first checked by a Txn that writes nothing.
5. Otherwise takes an etcd lease (leases.py) and compares-and-swaps (state.py). A failed swap
   brings back the fresh state, so the next attempt starts at step 2 with no extra read.

Between attempts: after a lost swap, only a jitter of a millisecond or two (the fresh state is
in hand, and a loser that backed off for longer would fall behind the newcomers and could
starve); after a transient error, randomised exponential back-off. No attempt is made past the
grant's own deadline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
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
        self.ambiguous = False
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

    def _timeout(self) -> float:
        """How long this attempt's call may take. With other endpoints to try, never all the
        time that is left: a member that accepts a call and never answers (paused, or
        forwarding to a dead leader) must leave time to ask another."""
        remaining = self.ctx.remaining()
        if remaining <= 0:
            self.ctx.raise_if_done()
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
    stays "live" in the cache: the next swap's compare of its marker then fails once and brings
    the fresh state. A stale cache costs a retry, never a wrong answer.
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
            # etcd refused the whole Txn, so nothing committed: retry with new etcd leases.
            for m in members:
                m.last_failure = e
                if not m.settled and m.ambiguous:
                    m.ambiguous = False
                    m._drop_lease(forget=True)
            raise
        except RetryableRpc as e:
            for m in members:
                m.last_failure = e
            self.snapshot = None  # unknown now: read afresh, maybe adopt
            raise

    def _attempt(self, members: Sequence[Acquisition]) -> None:
        timeout = min(m._timeout() for m in members)
        if self.snapshot is None:
            sent = time.monotonic()
            self.snapshot = self.txns.read(timeout)
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
        relied = list(plan.relied.values())
        if not plan.writers:
            if any(m.started > self.fetched_at for m, _ in plan.proposals):
                # Nothing to write, from a state cached before some of these acquisitions
                # began: confirm it still holds, with a Txn that writes nothing.
                sent = time.monotonic()
                self.snapshot, ok = self.txns.check(snapshot, relied, timeout)
                self.fetched_at = sent
                if not ok:
                    raise Conflict()
            self._settle(plan.proposals, self.snapshot.revision)
            return
        # The longest-lived first, so that the others can share the etcd lease it takes.
        writers = [m for m, _ in plan.writers]
        for m in sorted(writers, key=lambda m: -m.until):
            if m.lease is None:
                m.lease = self.pool.take(m.until, timeout, m.what)
        ours = [section.Entry(_lease_of(m).id, m.seq, parts, self.holder)
                for m, parts in plan.writers]  # fmt: skip
        drop = [owner for owner in gone if owner in snapshot.markers]
        for m in writers:
            m.ambiguous = True
        sent = time.monotonic()
        self.snapshot, ok = self.txns.swap(snapshot, live, relied, ours, timeout, drop=drop)
        self.fetched_at = sent
        for m in writers:
            m.ambiguous = False
        if not ok:
            raise Conflict()
        self.abandoned.discard(*drop)
        self._settle(plan.proposals, self.snapshot.revision)

    @staticmethod
    def _adopted(snapshot: Snapshot, m: Acquisition) -> bool:
        """A swap of ``m``'s whose reply was lost may have committed: if so, ``m`` takes its
        entry (ranges and token) and is settled."""
        token = None if m.lease is None else snapshot.markers.get((m.lease.id, m.seq))
        if token is None:
            return False
        m.finish(m._adopt(snapshot, token))
        return True

    def _settle(
        self, proposals: Sequence[tuple[Acquisition, SortedPartitions]], token: int
    ) -> None:
        for m, parts in proposals:
            held = Held(self.txns, _lease_of(m), m.seq) if parts else None
            m.finish(Grant(parts, m.until, token, handle=held))


def _lease_of(m: Acquisition) -> EtcdLease:
    assert m.lease is not None, "a writer holds an etcd lease"
    return m.lease


class _Plan:
    """What one attempt gives whom: members in queue order, each the part of what it asks
    that neither a live entry nor an earlier member holds."""

    def __init__(self, pending: Sequence[Acquisition], live: Sequence[section.Entry]) -> None:
        self.relied: dict[tuple[int, int], section.Entry] = {}  # entries the answer rests on
        self.proposals: list[tuple[Acquisition, SortedPartitions]] = []
        self.writers: list[tuple[Acquisition, SortedPartitions]] = []
        self.full: Acquisition | None = None  # refused: the section holds too many leases
        room = MAX_LIVE_LEASES - len(live)
        taken: list[Partition] = []
        for m in pending:
            free = SortedPartitionsBuilder(m.part)
            for entry in live:
                if any(p.overlaps(m.part) for p in entry.ranges):
                    self.relied[entry.owner] = entry
                    for p in entry.ranges:
                        free.exclude(p)
            for p in taken:
                free.exclude(p)
            parts = free.result()
            if parts and len(self.writers) == room:
                if not self.writers:
                    self.full = m
                return  # this one and the rest wait for the next attempt
            self.proposals.append((m, parts))
            if parts:
                self.writers.append((m, parts))
                taken.extend(parts)


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
