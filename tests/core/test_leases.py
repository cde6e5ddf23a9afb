"""The etcd leases of one lessor (``lessor.etcd.leases.LeasePool``), on the in-memory etcd model.

Proven here (margin 0.2 s; the fake clock moves only when told):

* a lease is asked for ``ceil(dur + margin)`` seconds, no slack, and its expiry is
  ``t0 + TTL`` with ``t0`` read before the grant was sent (a grant that takes time ends
  earlier locally than in etcd);
* the current lease is shared without a call while it lives past ``until + margin``; after
  that it is renewed (one ``LeaseKeepAlive``, no new grant), and its expiry then counts from
  before the renewal was sent, with the TTL etcd's reply carried;
* a lease whose TTL is not what an acquisition would ask for is not shared: a short
  acquisition after a long one gets a lease of its own, and the other way round; when etcd
  grants more than asked (its minimum TTL), acquisitions may share up to that;
* a lease is never renewed once retired (a marker on it must die with it), nor once the local
  view says it expired; a renewal that returns after the lease was retired is not used;
  retiring an idle lease revokes it; a renewal that etcd answers "not found" retires it and
  grants a new one; a renewal that fails leaves the user count as it was and raises;
* a superseded lease is retired and revoked once its last user gives it back (at once if it
  has none); an expired one is not revoked by a call; ``close`` retires the current one; an
  exception that reaches the grant while it revokes the superseded lease gives the new
  lease's uses back;
* ``retire``: a lease is never handed out again, and giving back one etcd no longer knows is
  quiet;
* ``share=False``: one lease per acquisition (for all the users taking it together), revoked
  when the last gives it back;
* ``max_duration``: an acquisition that long asks for at most :data:`MAX_LEASE_TTL` seconds,
  one two seconds longer asks for more.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from lessor.etcd.calls import run
from lessor.etcd.leases import MAX_LEASE_TTL, EtcdLease, LeasePool
from lessor.etcd.transport import RetryableRpc
from tests.support.etcd_model import EtcdModel, FakeClock, ModelTransport

MARGIN = 0.2
TIMEOUT = 1.0


class Etcd:
    """A fake clock, the etcd model, and a transport that can make grants slow or small."""

    def __init__(self, *, grant_takes: float = 0.0, minimum_ttl: int = 1) -> None:
        self.clock = FakeClock()
        self.model = EtcdModel(self.clock)
        self.transport = ModelTransport(self.model)
        self.rpc = self.transport.rpc
        self.grant_takes = grant_takes
        self.minimum_ttl = minimum_ttl
        self.asked: list[int] = []  # the TTL of every grant asked for
        self.renewals = 0
        self.renewal_takes = 0.0

    def lease(self, method: str, request: Any, timeout: float, what: str) -> Any:
        if method == "LeaseGrant":
            self.asked.append(request.TTL)
            self.clock.advance(self.grant_takes)  # etcd starts counting when it gets there
            request = self.rpc.LeaseGrantRequest(TTL=max(request.TTL, self.minimum_ttl))
        return self.transport.lease(method, request, timeout, what)

    def keep_alive(self, lease_id: int, timeout: float, what: str) -> int:
        self.renewals += 1
        self.clock.advance(self.renewal_takes)
        return self.transport.keep_alive(lease_id, timeout, what)

    def kv(self, method: str, request: Any, timeout: float, what: str) -> Any:
        return self.transport.kv(method, request, timeout, what)

    def pool(self, share: bool = True) -> LeasePool:
        return LeasePool(self.rpc, margin=MARGIN, share=share, clock=self.clock)  # type: ignore[arg-type]

    def alive(self, lease: EtcdLease) -> bool:
        """Whether etcd still has the lease (it was neither revoked nor expired)."""
        self.model.expire()
        return lease.id in self.model.leases

    def take(self, pool: LeasePool, dur: float, users: int = 1) -> EtcdLease:
        return run(self, pool.take(self.clock() + dur, TIMEOUT, "test", users=users))  # type: ignore[arg-type]


@pytest.fixture
def etcd() -> Etcd:
    return Etcd()


def test_a_lease_is_asked_for_the_duration_and_margin_without_slack(etcd: Etcd) -> None:
    lease = etcd.take(etcd.pool(), 1.0)
    assert etcd.asked == [math.ceil(1.0 + MARGIN)] == [lease.ttl]
    assert lease.expiry == etcd.clock() + lease.ttl and etcd.alive(lease)


def test_expiry_counts_from_before_the_grant_was_sent() -> None:
    etcd = Etcd(grant_takes=0.3)
    start = etcd.clock()
    lease = etcd.take(etcd.pool(), 1.0)
    assert lease.t0 == start
    assert lease.expiry == start + lease.ttl
    assert lease.expiry < etcd.model.leases[lease.id].expiry  # the local view ends first


def test_the_current_lease_is_shared_without_a_call_while_it_lives_long_enough(
    etcd: Etcd,
) -> None:
    pool = etcd.pool()
    first = etcd.take(pool, 2.5)  # TTL 3: ends at start + 3
    etcd.clock.advance(0.2)
    assert etcd.take(pool, 2.5) is first  # needs start + 2.9
    assert first.users == 2 and etcd.renewals == 0 and len(etcd.asked) == 1


def test_the_current_lease_is_renewed_when_it_would_end_too_soon(etcd: Etcd) -> None:
    pool = etcd.pool()
    first = etcd.take(pool, 2.5)  # TTL 3
    etcd.clock.advance(1.0)
    renewed_at = etcd.clock()
    assert etcd.take(pool, 2.5) is first  # needs start + 3.7: renewed, not granted anew
    assert etcd.renewals == 1 and len(etcd.asked) == 1 and first.users == 2
    assert first.t0 == renewed_at and first.expiry == renewed_at + 3
    assert etcd.model.leases[first.id].expiry == renewed_at + 3


def test_a_renewal_counts_from_before_it_was_sent() -> None:
    etcd = Etcd()
    etcd.renewal_takes = 0.3
    pool = etcd.pool()
    first = etcd.take(pool, 2.5)
    etcd.clock.advance(1.0)
    sent = etcd.clock()
    etcd.take(pool, 2.0)
    assert first.expiry == sent + 3 < etcd.model.leases[first.id].expiry


def test_a_short_acquisition_does_not_share_a_long_ones_lease(etcd: Etcd) -> None:
    """Its ranges would stay held after a crash for as long as the long one's."""
    pool = etcd.pool()
    long = etcd.take(pool, 100.0)
    short = etcd.take(pool, 1.0)
    assert short is not long
    assert short.expiry <= etcd.clock() + math.ceil(1.0 + MARGIN)
    assert etcd.take(pool, 1.0) is short  # and later short ones share the short one


def test_a_long_acquisition_does_not_share_a_short_ones_lease(etcd: Etcd) -> None:
    pool = etcd.pool()
    short = etcd.take(pool, 1.0)
    long = etcd.take(pool, 100.0)
    assert long is not short and long.expiry >= etcd.clock() + 100.0 + MARGIN


def test_leases_etcd_made_longer_than_asked_are_shared_up_to_that() -> None:
    etcd = Etcd(minimum_ttl=5)
    pool = etcd.pool()
    first = etcd.take(pool, 0.1)  # asks 1 s, etcd grants its minimum of 5
    assert first.ttl == 5
    etcd.clock.advance(1.0)
    assert etcd.take(pool, 0.1) is first  # a fresh one would live as long


def test_a_retired_lease_is_never_renewed(etcd: Etcd) -> None:
    pool = etcd.pool()
    first = etcd.take(pool, 2.5)
    run(etcd, pool.retire(first, TIMEOUT))  # e.g. a marker on it could not be deleted
    etcd.clock.advance(1.0)
    second = etcd.take(pool, 2.5)
    assert second is not first and etcd.renewals == 0
    assert etcd.model.leases[first.id].expiry == first.expiry  # it ends at its TTL


def test_retiring_an_idle_lease_revokes_it(etcd: Etcd) -> None:
    pool = etcd.pool()
    first = etcd.take(pool, 2.5)
    run(etcd, pool.give_back(first, TIMEOUT))  # idle, still current
    assert etcd.alive(first)
    run(etcd, pool.retire(first, TIMEOUT))
    assert not etcd.alive(first) and first.revoked


def test_a_renewal_that_returns_after_a_retire_is_not_used(etcd: Etcd) -> None:
    """A renewal on its way when another thread retires the lease may land after it; the
    acquisition that sent it gets a new lease rather than attach to the retired one."""
    pool = etcd.pool()
    first = etcd.take(pool, 2.5)
    etcd.clock.advance(1.0)
    sent = etcd.keep_alive

    def retire_meanwhile(lease_id: int, timeout: float, what: str) -> int:
        ttl = sent(lease_id, timeout, what)
        run(etcd, pool.retire(first, TIMEOUT))  # a release's delete of a marker on it failed
        return ttl

    etcd.keep_alive = retire_meanwhile  # type: ignore[method-assign]
    second = etcd.take(pool, 2.5)
    assert second is not first and first.retired and first.users == 1
    assert second.users == 1 and not second.retired


def test_a_lease_that_expired_locally_is_not_renewed(etcd: Etcd) -> None:
    pool = etcd.pool()
    first = etcd.take(pool, 2.5)
    etcd.clock.advance(3.0)
    assert etcd.take(pool, 2.5) is not first and etcd.renewals == 0


def test_a_renewal_etcd_answers_not_found_grants_a_new_lease(etcd: Etcd) -> None:
    pool = etcd.pool()
    first = etcd.take(pool, 2.5)
    run(etcd, pool.give_back(first, TIMEOUT))
    etcd.transport.lease("LeaseRevoke", etcd.rpc.LeaseRevokeRequest(ID=first.id), 1.0, "test")
    etcd.clock.advance(1.0)
    second = etcd.take(pool, 2.5)
    assert second is not first and etcd.renewals == 1 and first.retired
    assert first.users == 0 and etcd.alive(second) and second.users == 1


def test_a_failed_renewal_raises_and_leaves_the_users_as_they_were(etcd: Etcd) -> None:
    pool = etcd.pool()
    first = etcd.take(pool, 2.5)
    etcd.clock.advance(1.0)
    etcd.transport.fault = "dropped"
    with pytest.raises(RetryableRpc):
        etcd.take(pool, 2.5)
    assert first.users == 1 and not first.retired
    assert etcd.take(pool, 2.5) is first and etcd.renewals == 2


def test_a_superseded_lease_is_revoked_when_its_last_user_gives_it_back(etcd: Etcd) -> None:
    pool = etcd.pool()
    first = etcd.take(pool, 100.0, users=2)
    second = etcd.take(pool, 1.0)  # supersedes the first
    assert first.retired and etcd.alive(first)
    run(etcd, pool.give_back(first, TIMEOUT))
    assert etcd.alive(first)
    run(etcd, pool.give_back(first, TIMEOUT))
    assert not etcd.alive(first) and first.revoked
    assert etcd.alive(second) and not second.retired


def test_a_superseded_idle_lease_is_revoked_at_once(etcd: Etcd) -> None:
    pool = etcd.pool()
    first = etcd.take(pool, 100.0)
    run(etcd, pool.give_back(first, TIMEOUT))
    assert etcd.alive(first)  # current and idle: kept for the next acquisition
    etcd.take(pool, 1.0)
    assert not etcd.alive(first)


def test_a_lease_past_its_local_expiry_is_still_revoked(etcd: Etcd) -> None:
    """etcd may hold it longer than our clock says (a leader change extends every lease),
    with a marker on it: the revoke is sent (third review: it was skipped)."""
    pool = etcd.pool()
    first = etcd.take(pool, 1.0)
    etcd.clock.advance(10.0)
    etcd.take(pool, 1.0)  # supersedes the first, still in use
    calls = etcd.transport.calls
    run(etcd, pool.give_back(first, TIMEOUT))
    assert first.revoked and etcd.transport.calls == calls + 1


def test_close_retires_the_current_lease(etcd: Etcd) -> None:
    pool = etcd.pool()
    lease = etcd.take(pool, 1.0)
    run(etcd, pool.close(TIMEOUT))
    assert etcd.alive(lease)  # still in use
    run(etcd, pool.give_back(lease, TIMEOUT))
    assert not etcd.alive(lease)


def test_a_retired_lease_is_never_handed_out_again(etcd: Etcd) -> None:
    pool = etcd.pool()
    first = etcd.take(pool, 1.0)
    etcd.transport.lease("LeaseRevoke", etcd.rpc.LeaseRevokeRequest(ID=first.id), 1.0, "test")
    run(etcd, pool.retire(first, TIMEOUT))  # the core learned that etcd no longer knows it
    second = etcd.take(pool, 1.0)
    assert second is not first
    run(etcd, pool.give_back(first, TIMEOUT))  # a revoke that etcd answers "not found": quiet
    assert first.revoked and etcd.alive(second)


def test_unshared_each_acquisition_has_its_own_lease_revoked_when_given_back(
    etcd: Etcd,
) -> None:
    pool = etcd.pool(share=False)
    a = etcd.take(pool, 1.0)
    b = etcd.take(pool, 1.0)
    assert a is not b and etcd.asked == [2, 2]  # ceil(1.0 + 0.2)
    run(etcd, pool.give_back(a, TIMEOUT))
    assert not etcd.alive(a) and etcd.alive(b)
    run(etcd, pool.give_back(b, TIMEOUT))
    assert not etcd.alive(b)


def test_unshared_a_group_shares_one_lease_until_the_last_gives_it_back(etcd: Etcd) -> None:
    pool = etcd.pool(share=False)
    group = etcd.take(pool, 1.0, users=3)
    for _ in range(2):
        run(etcd, pool.give_back(group, TIMEOUT))
        assert etcd.alive(group)
    run(etcd, pool.give_back(group, TIMEOUT))
    assert not etcd.alive(group)


@pytest.mark.parametrize("share", [False, True])
def test_max_duration_fits_etcds_longest_lease(etcd: Etcd, share: bool) -> None:
    """The second of slack in ``max_duration`` absorbs the clock's rounding at 9e9 s."""
    pool = etcd.pool(share=share)
    assert pool.max_duration == pytest.approx(MAX_LEASE_TTL - 1 - MARGIN)
    etcd.take(pool, pool.max_duration)
    etcd.take(etcd.pool(share=share), pool.max_duration + 2.0)  # a pool with no lease yet
    longest, too_long = etcd.asked
    assert longest <= MAX_LEASE_TTL < too_long


class Interrupt(BaseException):
    """Stands for a cancel (or a KeyboardInterrupt) thrown in at a call."""


def test_an_interrupted_revoke_of_the_superseded_lease_gives_the_new_one_back(
    etcd: Etcd,
) -> None:
    """The grant's caller never gets the new lease when an exception reaches it while the
    superseded one is revoked: its uses go with it, or the new lease is never revoked once
    idle and retired (review of ``lessor.aio``: a use count leaked)."""
    pool = etcd.pool()
    first = etcd.take(pool, 100.0)
    run(etcd, pool.give_back(first, TIMEOUT))  # idle: revoked as soon as it is superseded
    real = etcd.lease

    def interrupted(method: str, request: Any, timeout: float, what: str) -> Any:
        if method == "LeaseRevoke":
            raise Interrupt()
        return real(method, request, timeout, what)

    etcd.lease = interrupted  # type: ignore[method-assign]
    with pytest.raises(Interrupt):
        etcd.take(pool, 1.0)
    etcd.lease = real  # type: ignore[method-assign]
    second = etcd.take(pool, 1.0)  # the lease granted before the interrupt: shared
    assert second is not first and second.users == 1
    run(etcd, pool.give_back(second, TIMEOUT))
    run(etcd, pool.close(TIMEOUT))
    assert not etcd.alive(second)
