"""The etcd leases of one lessor: granted on demand, shared by consecutive acquisitions.

Every section entry's marker is attached to an etcd lease, and etcd deletes the marker when
the lease's TTL runs out: that is what frees a crashed holder's ranges. Granting and revoking a
lease for each acquisition costs two of the three etcd writes of a cycle, so a lessor keeps one
*current* lease and lets later acquisitions attach their markers to it while it has time left
for them. Each acquisition still has its own marker, deleted when it is released.

A lease is asked for ``ceil(dur + margin + reuse)`` seconds: ``dur`` for the acquisition that
needs it, ``margin`` of safety, and ``reuse`` more so that acquisitions in the next ``reuse``
seconds can share it and still get their whole duration. A crashed holder's ranges are
therefore free again at most ``dur + margin + reuse`` (rounded up to whole seconds; more when
etcd's minimum TTL is larger) after the lease was granted. ``reuse = 0`` grants one lease per
acquisition, revoked when it is released.

A lease's expiry as seen here is ``t0 + granted TTL``, with ``t0`` read from the monotonic
clock *before* the grant was sent; etcd starts its countdown later, so the local view always
ends first.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lessor.errors import LessorError
from lessor.etcd.transport import LeaseNotFound, RetryableRpc, Transport

__all__ = ["MAX_LEASE_TTL", "EtcdLease", "LeasePool"]

MAX_LEASE_TTL = 9_000_000_000
"""etcd's longest lease TTL in seconds (``MaxLeaseTTL`` in etcd's lease package): a grant asking
for more is refused."""

log = logging.getLogger("lessor")


@dataclass(eq=False)
class EtcdLease:
    """One granted etcd lease and the acquisitions attached to it."""

    id: int
    granted_ttl: int
    t0: float  # time.monotonic() before the grant was sent
    users: int = 0
    retired: bool = False  # no new acquisition may attach to it
    revoked: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def expiry(self) -> float:
        """When the lease ends, on this process's monotonic clock, at the latest."""
        return self.t0 + self.granted_ttl


class LeasePool:
    """Hands out etcd leases to acquisitions; revokes the ones nobody can use any more."""

    def __init__(
        self,
        transport: Transport,
        *,
        margin: float,
        reuse: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transport = transport
        self._clock = clock
        self._margin = margin
        self._reuse = reuse
        self._lock = threading.Lock()
        self._current: EtcdLease | None = None
        self._minimum_ttl = 0  # etcd's, once a grant shows it (it grants more when asked less)

    @property
    def max_duration(self) -> float:
        """The longest acquisition a lease of at most :data:`MAX_LEASE_TTL` can cover."""
        return float(MAX_LEASE_TTL - 1) - self._margin - self._reuse

    def take(self, until: float, timeout: float, what: str, users: int = 1) -> EtcdLease:
        """A lease that lives past ``until + margin``, granting one if none does, for
        ``users`` acquisitions.

        Each of them must :meth:`give_back` what it took.
        """
        now = self._clock()
        with self._lock:
            current = self._current
            if (
                self._reuse > 0
                and current is not None
                and not current.retired
                and until + self._margin <= current.expiry <= self._longest(until, now)
            ):
                current.users += users
                return current
        ttl = max(1, math.ceil(until - now + self._margin + self._reuse))
        t0 = self._clock()
        response = self._transport.lease(
            "LeaseGrant", self._transport.rpc.LeaseGrantRequest(TTL=ttl), timeout, what
        )
        if response.error:
            raise LessorError(f"{what}: etcd refused a lease of {ttl}s: {response.error}")
        lease = EtcdLease(id=response.ID, granted_ttl=response.TTL, t0=t0, users=users)
        if lease.granted_ttl > ttl:
            self._minimum_ttl = max(self._minimum_ttl, response.TTL)
        if lease.expiry - self._margin < until:
            # etcd granted less than asked (it never should): no acquisition may rely on it.
            self._revoke(lease, timeout)
            raise LessorError(f"{what}: etcd granted {response.TTL}s, asked for {ttl}s")
        superseded = None
        with self._lock:
            if self._reuse > 0:
                superseded, self._current = self._current, lease
            else:
                lease.retired = True
        if superseded is not None:
            self._retire(superseded, timeout)
        return lease

    def _longest(self, until: float, now: float) -> float:
        """The latest expiry an acquisition until ``until`` may share: one that outlives it by
        more than the reuse slack would keep its ranges held that much longer after a crash."""
        return now + max(math.ceil(until - now + self._margin + self._reuse), self._minimum_ttl)

    def give_back(self, lease: EtcdLease, timeout: float) -> bool:
        """An acquisition no longer uses ``lease`` (its marker is deleted or will expire).
        False when the lease was to be revoked and etcd could not be told: it ends at its
        expiry instead, and so does every key still attached to it."""
        with self._lock:
            lease.users -= 1
            idle = lease.users == 0 and lease.retired
        return self._revoke(lease, timeout) if idle else True

    def forget(self, lease: EtcdLease) -> None:
        """etcd no longer knows ``lease``: never hand it out again."""
        with self._lock:
            lease.retired = True
            if self._current is lease:
                self._current = None

    def _retire(self, lease: EtcdLease, timeout: float) -> None:
        with self._lock:
            lease.retired = True
            idle = lease.users == 0
        if idle:
            self._revoke(lease, timeout)

    def _revoke(self, lease: EtcdLease, timeout: float) -> bool:
        with lease.lock:
            if lease.revoked:
                return True
            lease.revoked = True
        lease_id = lease.id
        if lease.expiry <= self._clock():
            return True  # etcd has let it go already
        try:
            self._transport.lease(
                "LeaseRevoke",
                self._transport.rpc.LeaseRevokeRequest(ID=lease_id),
                timeout,
                f"revoking etcd lease {lease_id:x}",
            )
        except LeaseNotFound:
            pass
        except (RetryableRpc, LessorError) as e:
            log.warning("could not revoke etcd lease %x (it expires by itself): %s", lease_id, e)
            return False
        return True

    def close(self, timeout: float) -> None:
        """Revoke the current lease once its acquisitions are done with it."""
        with self._lock:
            current, self._current = self._current, None
        if current is not None:
            self._retire(current, timeout)
