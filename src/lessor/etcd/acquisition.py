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
from dataclasses import dataclass

from tenacity import RetryCallState, wait_random, wait_random_exponential

from lessor.context import Context
from lessor.contract import Grant
from lessor.errors import Cancelled, DeadlineExceeded, LessorError, Transient, Unavailable
from lessor.etcd import section
from lessor.etcd.leases import EtcdLease, LeasePool
from lessor.etcd.state import SectionTxns, Snapshot
from lessor.etcd.transport import LeaseNotFound, RetryableRpc
from lessor.observe import notify
from lessor.partition import Partition, SortedPartitionsBuilder

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
    """The state one ``_acquire`` call carries from attempt to attempt."""

    def __init__(
        self,
        txns: SectionTxns,
        pool: LeasePool,
        *,
        part: Partition,
        until: float,
        seq: int,
        holder: str,
        cached: Snapshot | None,
        ctx: Context,
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
        self.snapshot = cached
        self.ctx = ctx  # the caller's, limited by the lessor's acquire_timeout
        self.rpc_timeout = rpc_timeout
        self.endpoints = endpoints
        self.abandoned = abandoned if abandoned is not None else Abandoned()
        self.lease: EtcdLease | None = None
        self.verified = False  # the snapshot was read during this acquisition
        self.ambiguous = False  # a swap may have committed without our hearing of it
        self.conflicts = 0
        self.last_failure: Exception | None = None
        self.what = f"section {txns.keys.section_id!r}"

    # -- one attempt -------------------------------------------------------------------------

    def attempt(self) -> Grant:
        try:
            return self._attempt()
        except Conflict as e:
            self.last_failure = e
            self.conflicts += 1
            notify("conflict", "etcd", self.txns.keys.section_id)
            raise
        except LeaseNotFound as e:
            # etcd refused the whole Txn, so nothing committed: retry with a new etcd lease.
            self.last_failure = e
            self.ambiguous = False
            self._drop_lease(forget=True)
            raise
        except RetryableRpc as e:
            self.last_failure = e
            self.snapshot, self.verified = None, False  # unknown now: read afresh, maybe adopt
            raise

    def _attempt(self) -> Grant:
        timeout = self._timeout()
        if self.snapshot is None:
            self.snapshot = self.txns.read(timeout)
            self.verified = True
        snapshot = self.snapshot
        if self.lease is not None:
            token = snapshot.markers.get((self.lease.id, self.seq))
            if token is not None:
                return self._adopt(snapshot, self.lease, token)
        gone = self.abandoned.current()
        live = [e for e in snapshot.live() if e.owner not in gone]
        relied = [e for e in live if any(p.overlaps(self.part) for p in e.ranges)]
        free = SortedPartitionsBuilder(self.part)
        for entry in relied:
            for p in entry.ranges:
                free.exclude(p)
        parts = free.result()
        if not parts:
            if not self.verified:
                self.snapshot, ok = self.txns.check(snapshot, relied, timeout)
                self.verified = True
                if not ok:
                    raise Conflict()
            return Grant(parts, self.until, self.snapshot.revision, handle=None)
        if len(live) >= MAX_LIVE_LEASES:
            raise SectionFull(f"{self.what} holds {len(live)} live leases, the most it may hold")
        if self.lease is None:
            self.lease = self.pool.take(self.until, timeout, self.what)
        ours = section.Entry(self.lease.id, self.seq, parts, self.holder)
        self.ambiguous = True
        drop = [owner for owner in gone if owner in snapshot.markers]
        self.snapshot, ok = self.txns.swap(snapshot, live, relied, ours, timeout, drop=drop)
        self.ambiguous = False
        self.verified = True
        if not ok:
            raise Conflict()
        self.abandoned.discard(*drop)
        return Grant(
            parts, self.until, self.snapshot.revision, handle=Held(self.txns, self.lease, self.seq)
        )

    def _adopt(self, snapshot: Snapshot, lease: EtcdLease, token: int) -> Grant:
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

    def finish(self, grant: Grant) -> Grant:
        """The grant, after returning the etcd lease an empty grant does not need."""
        if grant.handle is None:
            self._drop_lease()
        return grant

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
        return DeadlineExceeded(f"{self.what}: the deadline passed while acquiring a lease")


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
