"""The etcd leases of one lessor: granted on demand, shared by consecutive acquisitions.

Every section entry's marker is attached to an etcd lease, and etcd deletes the marker when
the lease's TTL runs out: that is what frees a crashed holder's ranges. Granting and revoking a
lease for each acquisition would cost two of the three etcd writes of a cycle, so a lessor
keeps one *current* lease and attaches later acquisitions' markers to it. Each acquisition
still has its own marker, deleted when it is released.

**The TTL.** A lease is asked for ``ceil(dur + margin)`` seconds (more when etcd's minimum TTL
is larger): ``dur`` for the acquisition that needs it and ``margin`` of safety, no slack. A
crashed holder's ranges are therefore free again ``ceil(dur + margin)`` after the lease's last
grant or renewal (after a leader change, etcd restarts every lease's countdown in full, so add
the election).

**Sharing by renewal.** A later acquisition may attach to the current lease when the lease's
TTL is exactly what it would ask for itself (or etcd's minimum): no acquisition rides on a
lease that outlives it by more than a lease of its own would. If the current lease would
expire before that acquisition's deadline plus the margin, it is renewed first: one
``LeaseKeepAlive``, which etcd's leader serves from memory (no raft write, no fsync), so the
uncontended cycle stays at two etcd writes, the swap and the release.

A renewal keeps alive *every* marker on the lease, including those of earlier acquisitions:
that is why a lease is renewed only while every marker on it belongs to a holder before its
deadline. The lessor deletes an overrunning holder's marker at its deadline
(``reaper.py``), and any marker that could not be deleted (a release or a clean-up that etcd
did not answer) *retires* its lease: it is never renewed nor handed out again, so it ends at
its TTL and takes that marker with it.

A renewal sent before the lease was retired can still land after it: a marker that could not
be deleted then lives at most one TTL past that renewal's timeout, never longer, since nothing
renews a retired lease again.

**The local expiry.** A lease's expiry as seen here is ``t0 + TTL``, with ``t0`` read from the
monotonic clock *before* the grant or the renewal was sent and the TTL that etcd's reply
carried; etcd starts its countdown later, so the local view always ends first.

With ``share=False``, each acquisition (or each group of acquisitions written together) gets
a lease of its own, revoked when it is released: three etcd writes a cycle.

**No I/O here.** The pool's methods that talk to etcd are generators of calls (``calls.py``):
the threaded shell runs them with :func:`~lessor.etcd.calls.run`, the asyncio one awaits them
with :func:`~lessor.etcd.calls.arun`. The pool's lock guards its bookkeeping only; it is never
held across a call, so tasks of one event loop and threads can share a pool alike.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lessor.errors import LessorError
from lessor.etcd.calls import Calls, KeepAlive, Unary
from lessor.etcd.rpc_errors import LeaseNotFound, RetryableRpc

__all__ = ["MAX_LEASE_TTL", "EtcdLease", "LeasePool"]

MAX_LEASE_TTL = 9_000_000_000
"""etcd's longest lease TTL in seconds (``MaxLeaseTTL`` in etcd's lease package): a grant asking
for more is refused."""

log = logging.getLogger("lessor")


@dataclass(eq=False)
class EtcdLease:
    """One granted etcd lease and the acquisitions attached to it.

    ``t0`` and ``ttl`` change together, under the pool's lock, when the lease is renewed.
    """

    id: int
    ttl: int  # the TTL etcd's last grant or renewal reply carried
    t0: float  # time.monotonic() before that grant or renewal was sent
    users: int = 0
    retired: bool = False  # no new acquisition may attach to it, and it is never renewed
    revoked: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def expiry(self) -> float:
        """When the lease ends, on this process's monotonic clock, at the latest."""
        return self.t0 + self.ttl


class LeasePool:
    """Hands out etcd leases to acquisitions; renews the current one; revokes the ones nobody
    can use any more."""

    def __init__(
        self,
        rpc: Any,
        *,
        margin: float,
        share: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rpc = rpc  # etcd's generated messages (a transport's ``rpc``)
        self._clock = clock
        self._margin = margin
        self._share = share
        self._lock = threading.Lock()
        self._current: EtcdLease | None = None
        self._minimum_ttl = 0  # etcd's, once a grant shows it (it grants more when asked less)

    @property
    def max_duration(self) -> float:
        """The longest acquisition a lease of at most :data:`MAX_LEASE_TTL` can cover."""
        return float(MAX_LEASE_TTL - 1) - self._margin

    def take(self, until: float, timeout: float, what: str, users: int = 1) -> Calls[EtcdLease]:
        """A lease that lives past ``until + margin``, for ``users`` acquisitions: the current
        one (renewed if need be) when its TTL fits, else a new grant.

        Each of them must :meth:`give_back` what it took.
        """
        now = self._clock()
        ttl = self._ttl(until, now)
        with self._lock:
            current = self._current
            shared = (
                self._share
                and current is not None
                and not current.retired
                and ttl <= current.ttl <= max(ttl, self._minimum_ttl)
                and current.expiry > now  # the local view says etcd still has it
            )
            if shared:
                assert current is not None
                current.users += users
                fresh = until + self._margin <= current.expiry
        if shared:
            assert current is not None
            try:
                renewed = fresh or (yield from self._renew(current, until, timeout, what))
            except BaseException:
                yield from self.give_back(current, timeout, users)
                raise
            if renewed:
                return current
            yield from self.give_back(current, timeout, users)
        return (yield from self._grant(ttl, until, timeout, what, users))

    def _ttl(self, until: float, now: float) -> int:
        return max(1, math.ceil(until - now + self._margin))

    def _renew(self, lease: EtcdLease, until: float, timeout: float, what: str) -> Calls[bool]:
        """Renew ``lease`` so that it lives past ``until + margin``; False when it cannot
        serve (etcd no longer knows it, or renewed it for less): it is retired."""
        if lease.retired:  # since it was taken: a marker on it must be left to die
            return False
        t0 = self._clock()
        try:
            ttl = yield KeepAlive(lease.id, timeout, what)
        except LeaseNotFound:
            yield from self.retire(lease, timeout)
            return False
        with self._lock:
            if t0 + ttl > lease.expiry:
                lease.t0, lease.ttl = t0, ttl
            if lease.retired:
                # Retired while the renewal was on its way: it may have landed after, and kept
                # a marker that must die with the lease alive for one more TTL (the bound the
                # module states). Nothing new attaches to it.
                return False
            if until + self._margin <= lease.expiry:
                return True
        yield from self.retire(lease, timeout)  # etcd renewed it for less than its TTL
        return False

    def _grant(
        self, ttl: int, until: float, timeout: float, what: str, users: int
    ) -> Calls[EtcdLease]:
        t0 = self._clock()
        response = yield Unary("lease", "LeaseGrant", self._rpc.LeaseGrantRequest(TTL=ttl),
                               timeout, what)  # fmt: skip
        if response.error:
            raise LessorError(f"{what}: etcd refused a lease of {ttl}s: {response.error}")
        lease = EtcdLease(id=response.ID, ttl=response.TTL, t0=t0, users=users)
        if lease.ttl > ttl:
            self._minimum_ttl = max(self._minimum_ttl, response.TTL)
        if lease.expiry - self._margin < until:
            # etcd granted less than asked (it never should): no acquisition may rely on it.
            yield from self._revoke(lease, timeout)
            raise LessorError(f"{what}: etcd granted {response.TTL}s, asked for {ttl}s")
        superseded = None
        with self._lock:
            if self._share:
                superseded, self._current = self._current, lease
            else:
                lease.retired = True
        if superseded is not None:
            try:
                yield from self._retire_and_revoke(superseded, timeout)
            except BaseException:
                # Its caller never gets the new lease: its uses go back here, with no call
                # (none can be relied on to run from here). It is current, so nothing is to
                # be revoked; were it retired meanwhile, it would end at its expiry.
                with self._lock:
                    lease.users -= users
                raise
        return lease

    def give_back(self, lease: EtcdLease, timeout: float, users: int = 1) -> Calls[bool]:
        """``users`` acquisitions no longer use ``lease`` (their markers are deleted, or will
        expire). False when the lease was to be revoked and etcd could not be told: it ends at
        its expiry instead, and so does every key still attached to it."""
        with self._lock:
            lease.users -= users
            idle = lease.users == 0 and lease.retired
        return (yield from self._revoke(lease, timeout)) if idle else True

    def retire(self, lease: EtcdLease, timeout: float) -> Calls[None]:
        """Never hand ``lease`` out nor renew it again: etcd no longer knows it, or a marker
        on it could not be deleted and must die with it. It is revoked now if nobody uses it,
        else when its last user gives it back; failing that, it ends at its expiry."""
        with self._lock:
            if self._current is lease:
                self._current = None
        yield from self._retire_and_revoke(lease, timeout)

    def _retire_and_revoke(self, lease: EtcdLease, timeout: float) -> Calls[None]:
        with self._lock:
            lease.retired = True
            idle = lease.users == 0
        if idle:
            yield from self._revoke(lease, timeout)

    def _revoke(self, lease: EtcdLease, timeout: float) -> Calls[bool]:
        with lease.lock:
            if lease.revoked:
                return True
            lease.revoked = True
        lease_id = lease.id
        # Revoked even when our clock says it has expired: a leader change extends every
        # lease (etcd's Promote), and a marker still on it lives until etcd lets it go.
        try:
            yield Unary("lease", "LeaseRevoke", self._rpc.LeaseRevokeRequest(ID=lease_id),
                        timeout, f"revoking etcd lease {lease_id:x}")  # fmt: skip
        except LeaseNotFound:
            pass
        except (RetryableRpc, LessorError) as e:
            # Not a warning: nothing is lost (the lease expires by itself), and a release that
            # this leaves undone says so in its own one line.
            log.info("could not revoke etcd lease %x (it expires by itself): %s", lease_id, e)
            return False
        return True

    def close(self, timeout: float) -> Calls[None]:
        """Revoke the current lease once its acquisitions are done with it."""
        with self._lock:
            current, self._current = self._current, None
        if current is not None:
            yield from self._retire_and_revoke(current, timeout)
