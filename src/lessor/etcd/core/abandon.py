"""An acquisition that ends without ranges leaves nothing held: give back, or abandon.

Settling a member with an error (:func:`fail`) ends its etcd lease's use. Most often that is
all (:func:`give_back`). But a swap whose reply was lost stays *ambiguous* until it is known
not to have committed (a later swap of the same acquisition succeeded, or the section moved on
without its marker), and it may commit long after its caller gave up: a leader that kept it in
its log commits it when quorum returns. Such an acquisition is *abandoned* (:func:`abandon`):

* its owner goes into the process's :attr:`~lessor.etcd.known.Known.abandoned` set, so the
  process's next swap of the section drops its entry and deletes its marker;
* a clean-up, run apart from the caller (:func:`clean_up`), writes a *tombstone* on its marker's
  key, which either deletes a marker the swap wrote or stops the lost swap from ever committing
  (its "marker absent" compare fails: ``state.py``), then gives the etcd lease back. A
  tombstone that cannot be written retires the lease, so what the swap wrote ends at its TTL.
"""

from __future__ import annotations

import logging

from lessor.errors import LessorError
from lessor.etcd.core.member import Config, Member
from lessor.etcd.keys import Owner
from lessor.etcd.known import Known
from lessor.etcd.leases import EtcdLease
from lessor.etcd.ops import CleanUp, GiveBack, RetireLease, Steps, Tombstone, Wait
from lessor.etcd.retry import CLEAN_UP_PAUSE
from lessor.etcd.transport import LeaseNotFound, RetryableRpc

__all__ = ["abandon", "clean_up", "fail", "give_back"]

log = logging.getLogger("lessor")


def fail(known: Known, m: Member, error: BaseException, config: Config) -> Steps:
    """Settle ``m`` without a grant (``error`` was the last outcome): leave nothing held."""
    m.error = m.failure(error)
    yield from abandon(known, m, config)


def give_back(m: Member, config: Config) -> Steps:
    """``m`` needs its etcd lease no more, and no swap of its can still commit: give the
    lease back (its pool revokes it once idle and retired)."""
    lease, m.lease = m.lease, None
    if lease is not None:
        yield GiveBack(lease, config.rpc_timeout)


def abandon(known: Known, m: Member, config: Config) -> Steps:
    """``m`` ends without ranges: leave nothing held, even if its last swap did commit. The
    clean-up runs apart: the caller's time is up or its error is final, and etcd may be the
    very thing that is not answering.

    An ambiguous member's lease is retired before its clean-up is yielded: an exception thrown
    in at that yield, whether the clean-up started or not, then leaves whatever the swap wrote
    to end with the lease, never renewed (and the lease is given back once, by the clean-up,
    or not at all: never twice, which would revoke it under another holder)."""
    lease, m.lease = m.lease, None
    if lease is None:
        return
    if m.ambiguous:
        lease.retired = True  # as _forsake does: no op can be relied on to run from here
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
