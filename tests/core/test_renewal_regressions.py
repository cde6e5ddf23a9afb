"""Regressions from the adversarial review of shared etcd leases renewed by LeaseKeepAlive
(3a9c70d), on the etcd model with the real core, lease pool and Txns. Every one failed there.

Proven here:

* an abandoned acquisition whose tombstone keeps failing retires its lease at the first
  failure, so renewals for other acquisitions cannot keep its marker alive (nor its clean-up
  going) for longer than one TTL;
* while a release still tries to delete its marker, no acquisition renews that lease;
* an expire that fails after the holder gave the lease back revokes the retired, idle lease.
"""

from __future__ import annotations

import contextlib
from typing import Any

import grpc

from lessor.etcd import core
from lessor.etcd import section as section_codec
from lessor.etcd.calls import run
from lessor.etcd.keys import Owner, SectionKeys
from lessor.etcd.known import Known
from lessor.etcd.leases import EtcdLease, LeasePool
from lessor.etcd.ops import DeleteMarker, GiveBack, Steps, Tombstone, Wait
from lessor.etcd.shell import SectionShell
from lessor.etcd.transport import RetryableRpc
from lessor.partition import Partition, SortedPartitions
from tests.support.etcd_model import EtcdModel, FakeClock, ModelTransport

SEQ = 1
PART = Partition(0, 8)


class World:
    """One process's section on the etcd model (share_leases=True)."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.etcd = EtcdModel(self.clock)
        self.transport = ModelTransport(self.etcd)
        self.pool = LeasePool(self.transport.rpc, margin=0.2, share=True, clock=self.clock)
        self.keys = SectionKeys.of("/t/", "s")
        self.section = SectionShell(self.transport, self.keys, self.pool)
        self.known: Known = self.section.known
        self.config = core.Config(holder="p", rpc_timeout=1.0, release_timeout=1.0,
                                  clock=self.clock)  # fmt: skip

    def write_marker(self, lease: EtcdLease, seq: int) -> None:
        """Our entry's swap commits; (the test says whether its reply arrived)."""
        snapshot = run(self.transport, self.section.txns.read(1.0))
        ours = section_codec.Entry(lease.id, seq, SortedPartitions([PART]), "p")
        _, written = run(self.transport, self.section.txns.swap(snapshot, [], [], [ours], 1.0))
        assert written

    def another_worker_cycle(self) -> None:
        """Another acquisition of the same process, same duration: it takes the shared lease
        (renewing it when it would end before its deadline + margin) and gives it back."""
        lease = run(self.transport, self.pool.take(self.clock() + 1.0, 1.0, "another worker"))
        run(self.transport, self.pool.give_back(lease, 1.0))

    def marker_alive(self, lease: EtcdLease, seq: int) -> bool:
        kv = self.etcd.kvs.get(self.keys.marker(lease.id, seq))
        return kv is not None and kv.value != b"" and lease.id in self.etcd.leases


def test_an_abandoned_marker_whose_tombstone_keeps_failing_ends_with_its_lease() -> None:
    """Schedule: acquisition #1 (dur 1 s, its etcd lease L of TTL 2 s) swaps; the swap commits
    but its reply is lost; its deadline passes, so it is abandoned and ``clean_up`` tombstones
    it. Fault: its tombstone Txns fail (UNAVAILABLE: a write path that times out, or "too many
    requests"), while LeaseKeepAlive (served from the leader's memory, no raft write) is
    answered. Meanwhile the process's other workers acquire with the same duration, so they
    share L and renew it about once a second.

    ``_tombstone`` retries "while the etcd lease lives", judged by ``lease.expiry``, which each
    renewal moves on; and the lease is retired only when the clean-up gives up. So it never
    gives up, L is never retired, and the abandoned marker (ranges held by nobody) lives for as
    long as the writes fail and the process acquires. Before 3a9c70d the lease's expiry was
    fixed, and the marker ended with it.

    Invariant 2: an abandoned marker must not be kept alive by a renewal for more than one TTL
    after the failure. Here: 20 s after the abandonment, the marker is still alive."""
    w = World()
    lease = run(
        w.transport, w.pool.take(w.clock() + 1.0, 1.0, "acquisition #1")
    )  # TTL ceil(1.2) = 2
    w.write_marker(lease, SEQ)  # the swap committed; its reply was lost
    owner = Owner(lease.id, SEQ)
    w.known.abandoned.add(owner)
    abandoned_at = w.clock()
    ttl = lease.ttl

    steps: Steps = core.clean_up(w.known, owner, lease, w.config)
    result: Any = None
    error: BaseException | None = None
    ended = False
    while w.clock() < abandoned_at + 20.0:
        try:
            op = steps.send(result) if error is None else steps.throw(error)
        except StopIteration:
            ended = True
            break
        result, error = None, None
        if isinstance(op, Tombstone):
            error = RetryableRpc("model:2379", grpc.StatusCode.UNAVAILABLE, "write failed")
        elif isinstance(op, Wait):
            w.clock.advance(op.seconds)
            w.another_worker_cycle()
            w.etcd.expire()
        else:
            result = w.section.perform(op)
    alive = w.marker_alive(lease, SEQ)
    assert ended and not alive, (
        f"{w.clock() - abandoned_at:.1f}s after the abandonment (etcd lease TTL {ttl}s): "
        f"clean-up ended={ended}, lease retired={lease.retired}, the abandoned marker "
        f"{'is still alive' if alive else 'is gone'}; etcd lease expiry "
        f"t={w.etcd.leases[lease.id].expiry - abandoned_at:.1f}s after the abandonment"
    )


def test_while_a_release_still_tries_its_delete_no_acquisition_renews_its_lease() -> None:
    """The lease is retired at the first failed delete: another acquisition of the process,
    meanwhile, gets a new lease, and the undeleted marker's lease keeps the expiry it had."""
    w = World()
    lease = run(w.transport, w.pool.take(w.clock() + 3.0, 1.0, "A"))
    w.write_marker(lease, SEQ)
    held = core.Held(w.known, lease, SEQ, w.clock() + 3.0)
    expiry = w.etcd.leases[lease.id].expiry
    steps = core.release(held, w.config)
    result: Any = None
    error: BaseException | None = None
    others: list[EtcdLease] = []
    try:
        while True:
            op = steps.throw(error) if error is not None else steps.send(result)
            error, result = None, None
            if isinstance(op, DeleteMarker):
                error = RetryableRpc("model:2379", grpc.StatusCode.UNAVAILABLE, "delete failed")
            elif isinstance(op, Wait):
                w.clock.advance(op.seconds)
                others.append(
                    run(w.transport, w.pool.take(w.clock() + 3.0, 1.0, "B"))
                )  # would need renewing
            else:
                result = w.section.perform(op)
    except StopIteration:
        pass
    except Exception:
        pass
    assert others and all(o is not lease for o in others)
    # Never renewed since (and revoked in the end, its last user gone).
    assert lease.id not in w.etcd.leases or w.etcd.leases[lease.id].expiry == expiry
    assert lease.revoked


def test_an_expire_that_fails_after_the_holder_gave_back_revokes_the_idle_lease() -> None:
    """Schedule: holder A overruns its deadline; the reaper's ``expire`` claims its marker and
    its deletes start failing. A's callback then ends: its release finds the marker claimed
    and only gives L back (users 1 -> 0; L is not retired yet, so nothing is revoked). The
    expire gives up at the release timeout and yields ``RetireLease``: ``LeasePool.retire``
    flags L and drops it as current, but never revokes it, though it is now retired and idle,
    and nobody is left to give it back.

    Invariant 4: a lease retired and idle must be revoked. L (and A's marker with it) is left
    to its TTL, though etcd answers again by then."""
    w = World()
    lease = run(w.transport, w.pool.take(w.clock() + 1.0, 1.0, "A"))
    w.write_marker(lease, SEQ)
    held = core.Held(w.known, lease, SEQ, w.clock() + 1.0)
    w.clock.advance(1.0)  # A's deadline

    expire = core.expire(held, w.config)
    op = next(expire)
    assert isinstance(op, DeleteMarker)
    # A's release, meanwhile: the marker is the expire's; it gives L back.
    release = core.release(held, w.config)
    rop = next(release)
    assert isinstance(rop, GiveBack)
    with contextlib.suppress(StopIteration):
        release.send(w.section.perform(rop))
    # The expire's deletes keep failing until the release timeout; then it retires L.
    error: BaseException | None = RetryableRpc("model:2379", grpc.StatusCode.UNAVAILABLE, "x")
    result: Any = None
    try:
        while True:
            op = expire.throw(error) if error is not None else expire.send(result)
            error, result = None, None
            if isinstance(op, DeleteMarker):
                error = RetryableRpc("model:2379", grpc.StatusCode.UNAVAILABLE, "delete failed")
            elif isinstance(op, Wait):
                w.clock.advance(op.seconds)
            else:
                result = w.section.perform(op)
    except StopIteration:
        pass
    assert lease.retired and lease.users == 0
    assert lease.revoked and lease.id not in w.etcd.leases, (
        f"etcd lease {lease.id:x} is retired and idle (users {lease.users}) but was never "
        f"revoked; it lives {w.etcd.leases[lease.id].expiry - w.clock():.1f}s more, and A's "
        f"marker with it"
    )
