"""The end of an acquisition in the core (``core.release``, ``core.clean_up``), driven against
the etcd model through the threaded shell's own ``SectionShell.perform``.

Proven here:

* release: the owner is dead to this process before its first call; the marker is deleted,
  then the etcd lease is given back; a lease that giving back revokes (retired, last user) is
  given back without a separate delete; a failed delete is tried again (the shell's transport
  moves to the next endpoint) until the release timeout; one that still fails retires the
  lease (no renewal may keep its marker alive), gives it back, and is raised after that as
  one line saying when the ranges come free;
* expire (an overrun holder's deadline): deletes the marker once; the release then only
  gives the lease back; whichever of the two comes second does nothing to the marker;
* clean_up: tombstone first, then the owner leaves the abandoned set, then the lease is given
  back; a tombstone whose reply was lost is retried, and the retry (a second
  ``SectionTxns.abandon``) leaves it a tombstone; a delayed swap of that owner then cannot
  commit, whether the lease lives on (its marker compare fails) or was revoked (etcd refuses
  the put);
* when the abandoned swap *had* committed and the tombstone's reply was lost, the retry writes
  a tombstone where the deleted marker was; the committed entry stays dead (found as a defect
  by this test: markers were read without their values, so the tombstone counted as one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lessor.errors import Unavailable
from lessor.etcd import core
from lessor.etcd import section as section_codec
from lessor.etcd.calls import run
from lessor.etcd.keys import Owner, SectionKeys
from lessor.etcd.leases import EtcdLease, LeasePool
from lessor.etcd.ops import DeleteMarker, GiveBack, Op, RetireLease, Steps, Tombstone, Wait
from lessor.etcd.shell import SectionShell
from lessor.etcd.state import TOMBSTONE
from lessor.etcd.transport import RetryableRpc
from lessor.partition import Partition, SortedPartitions
from tests.support.etcd_model import EtcdModel, FakeClock, ModelTransport

SEQ = 1
PART = Partition(0, 8)


class World:
    """One process's section on the etcd model."""

    def __init__(self, share: bool = True) -> None:
        self.clock = FakeClock()
        self.etcd = EtcdModel(self.clock)
        self.transport = ModelTransport(self.etcd)
        self.pool = LeasePool(self.transport.rpc, margin=0.2, share=share, clock=self.clock)
        self.keys = SectionKeys.of("/t/", "s")
        self.section = SectionShell(self.transport, self.keys, self.pool)
        self.known = self.section.known
        self.config = core.Config(holder="p", rpc_timeout=1.0, release_timeout=1.0,
                                  clock=self.clock)  # fmt: skip

    def lease(self) -> EtcdLease:
        return run(self.transport, self.pool.take(self.clock() + 1.0, 1.0, "test"))

    def swap(self, lease: EtcdLease, fault: str) -> bool:
        """Send our entry's swap, with ``fault`` on the call: whether we heard it commit."""
        snapshot = run(self.transport, self.section.txns.read(1.0))
        ours = section_codec.Entry(lease.id, SEQ, SortedPartitions([PART]), "p")
        self.transport.fault = fault
        try:
            _, written = run(self.transport, self.section.txns.swap(snapshot, [], [], [ours], 1.0))
        except RetryableRpc:
            return False
        return written

    def drive(
        self, steps: Steps, faults: Sequence[str] = (), at: Callable[[Op], None] = lambda op: None
    ) -> tuple[list[type], BaseException | None]:
        """Perform every operation: ``faults[i]`` on the i-th one that calls etcd itself (a
        give-back's revoke is always answered), a Wait moves the clock. ``at`` sees each
        operation before it is performed. Returns the operations' types and what ``steps``
        raised."""
        faults = list(faults)
        performed: list[type] = []
        result: Any = None
        error: BaseException | None = None
        while True:
            try:
                op = steps.send(result) if error is None else steps.throw(error)
            except StopIteration:
                return performed, None
            except Exception as e:
                return performed, e
            at(op)
            performed.append(type(op))
            result, error = None, None
            if isinstance(op, Wait):
                self.clock.advance(op.seconds)
                continue
            if not isinstance(op, (GiveBack, RetireLease)):  # those two call etcd only to revoke
                self.transport.fault = faults.pop(0) if faults else "ok"
            try:
                result = self.section.perform(op)
            except Exception as e:
                error = e

    def marker(self, owner: Owner) -> bytes | None:
        kv = self.etcd.kvs.get(self.keys.marker(owner.lease, owner.seq))
        return None if kv is None else kv.value

    def held(self) -> list[Owner]:
        """The owners whose entries etcd shows live, as any reader sees them."""
        return [e.owner for e in run(self.transport, self.section.txns.read(1.0)).live()]


# -- release -----------------------------------------------------------------------------------


def test_release_deletes_the_marker_then_gives_the_lease_back() -> None:
    world = World()
    lease = world.lease()
    assert world.swap(lease, "ok")
    owner = Owner(lease.id, SEQ)
    snapshot = run(world.transport, world.section.txns.read(1.0))
    world.known.store(snapshot, world.clock())
    assert [e.owner for e in world.known.live(snapshot)] == [owner]

    def before(op: Op) -> None:
        assert world.known.live(snapshot) == [], "released only after a call"

    held = core.Held(world.known, lease, SEQ, world.clock() + 5.0)
    ops, error = world.drive(core.release(held, world.config), at=before)
    assert (ops, error) == ([DeleteMarker, GiveBack], None)
    assert world.marker(owner) is None and world.held() == []
    assert lease.id in world.etcd.leases  # shared: it lives on for the next acquisition


def test_release_of_the_last_user_of_a_retired_lease_only_gives_it_back() -> None:
    world = World(share=False)  # every lease retired from the start
    lease = world.lease()
    assert world.swap(lease, "ok")
    ops, error = world.drive(
        core.release(core.Held(world.known, lease, SEQ, world.clock() + 5.0), world.config)
    )
    assert (ops, error) == ([GiveBack], None)
    assert lease.id not in world.etcd.leases and world.held() == []  # the marker went with it


def test_a_failed_delete_is_tried_again_on_the_next_endpoint() -> None:
    """The first failure retires the lease at once (no renewal may extend the marker while
    the tries go on); the next tries go to the next endpoints."""
    world = World()
    lease = world.lease()
    assert world.swap(lease, "ok")
    held = core.Held(world.known, lease, SEQ, world.clock() + 5.0)
    ops, error = world.drive(core.release(held, world.config), faults=["dropped", "lost"])
    assert error is None
    assert ops == [DeleteMarker, RetireLease, Wait, DeleteMarker, Wait, DeleteMarker, GiveBack]
    assert world.held() == [] and lease.retired
    assert lease.id not in world.etcd.leases  # retired, and its last user gave it back


def test_a_delete_that_fails_until_the_release_timeout_is_made_good_by_the_revoke() -> None:
    """The lease is retired at the first failure; its last user gives it back, which revokes
    it, and the marker goes with it: nothing to report."""
    world = World()
    lease = world.lease()
    assert world.swap(lease, "ok")
    held = core.Held(world.known, lease, SEQ, world.clock() + 5.0)
    start = world.clock()
    ops, error = world.drive(core.release(held, world.config), faults=["dropped"] * 100)
    assert ops[:2] == [DeleteMarker, RetireLease] and ops.count(RetireLease) == 1
    assert ops[-1] == GiveBack and ops.count(DeleteMarker) > 2
    assert world.clock() - start <= world.config.release_timeout
    assert error is None
    assert world.held() == [] and lease.revoked and lease.id not in world.etcd.leases
    assert run(world.transport, world.pool.take(world.clock() + 1.0, 1.0, "next")) is not lease


def test_a_delete_that_fails_on_a_lease_still_in_use_retires_it_then_raises() -> None:
    """A renewal of the shared lease would keep the undeleted marker alive: the lease is
    retired (never renewed again), given back, and the error says when the ranges come free."""
    world = World()
    lease = world.lease()
    assert (
        run(world.transport, world.pool.take(world.clock() + 1.0, 1.0, "another acquisition"))
        is lease
    )
    assert world.swap(lease, "ok")
    held = core.Held(world.known, lease, SEQ, world.clock() + 5.0)
    ops, error = world.drive(core.release(held, world.config), faults=["dropped"] * 100)
    assert ops[:2] == [DeleteMarker, RetireLease] and ops[-1] == GiveBack
    assert isinstance(error, Unavailable) and "stay held until etcd lease" in str(error)
    assert "\n" not in str(error)
    assert lease.retired and not lease.revoked and lease.users == 1
    assert world.held() == [held.owner]  # etcd still shows it; this process does not
    assert world.known.live(run(world.transport, world.section.txns.read(1.0))) == []
    assert run(world.transport, world.pool.take(world.clock() + 1.0, 1.0, "next")) is not lease


def test_expire_deletes_the_marker_and_the_release_then_only_gives_the_lease_back() -> None:
    world = World()
    lease = world.lease()
    assert world.swap(lease, "ok")
    held = core.Held(world.known, lease, SEQ, world.clock() + 5.0)
    ops, error = world.drive(core.expire(held, world.config))
    assert (ops, error) == ([DeleteMarker], None)
    assert world.held() == []
    ops, error = world.drive(core.release(held, world.config))
    assert (ops, error) == ([GiveBack], None)
    assert world.drive(core.expire(held, world.config)) == ([], None)  # once only


def test_expire_after_the_release_does_nothing() -> None:
    world = World()
    lease = world.lease()
    assert world.swap(lease, "ok")
    held = core.Held(world.known, lease, SEQ, world.clock() + 5.0)
    assert world.drive(core.release(held, world.config)) == ([DeleteMarker, GiveBack], None)
    assert world.drive(core.expire(held, world.config)) == ([], None)


def test_an_expire_that_cannot_delete_retires_the_lease() -> None:
    world = World()
    lease = world.lease()
    assert world.swap(lease, "ok")
    held = core.Held(world.known, lease, SEQ, world.clock() + 5.0)
    ops, error = world.drive(core.expire(held, world.config), faults=["dropped"] * 100)
    assert ops[:2] == [DeleteMarker, RetireLease] and ops[-1] == DeleteMarker
    assert error is None and lease.retired


# -- clean_up ----------------------------------------------------------------------------------


def abandoned(world: World, lease: EtcdLease) -> Owner:
    owner = Owner(lease.id, SEQ)
    world.known.abandoned.add(owner)
    return owner


def test_a_tombstone_retried_after_a_lost_reply_stays_a_tombstone() -> None:
    world = World()
    lease = world.lease()
    # Another acquisition rides on the lease: retired by the failure, it lives on for it.
    assert (
        run(world.transport, world.pool.take(world.clock() + 1.0, 1.0, "another acquisition"))
        is lease
    )
    assert not world.swap(lease, "delayed")  # sent; etcd applies it later
    owner = abandoned(world, lease)

    def before(op: Op) -> None:
        if isinstance(op, GiveBack):
            assert world.known.abandoned.current() == frozenset() and world.known.idle

    steps = core.clean_up(world.known, owner, lease, world.config)
    ops, error = world.drive(steps, faults=["lost", "ok"], at=before)
    assert (ops, error) == ([Tombstone, RetireLease, Wait, Tombstone, GiveBack], None)
    assert world.marker(owner) == TOMBSTONE
    world.etcd.apply_delayed(0)  # the late swap arrives: its "marker absent" compare fails
    assert world.held() == []
    assert run(world.transport, world.section.txns.read(1.0)).entries == ()
    assert world.marker(owner) == TOMBSTONE


def test_a_delayed_swap_cannot_commit_once_the_tombstones_lease_is_revoked() -> None:
    world = World(share=False)  # giving the lease back revokes it, and the tombstone with it
    lease = world.lease()
    assert not world.swap(lease, "delayed")
    owner = abandoned(world, lease)
    ops, error = world.drive(core.clean_up(world.known, owner, lease, world.config),
                             faults=["lost"])  # fmt: skip
    assert (ops, error) == ([Tombstone, RetireLease, Wait, Tombstone, GiveBack], None)
    assert lease.id not in world.etcd.leases and world.marker(owner) is None
    world.etcd.apply_delayed(0)  # its put names a lease etcd no longer has: refused whole
    assert world.held() == [] and run(world.transport, world.section.txns.read(1.0)).entries == ()


def test_a_committed_abandoned_swap_is_killed_by_its_tombstone() -> None:
    world = World()
    lease = world.lease()
    assert not world.swap(lease, "lost")  # committed, but we never heard
    owner = abandoned(world, lease)
    assert world.held() == [owner]
    ops, error = world.drive(core.clean_up(world.known, owner, lease, world.config))
    assert (ops, error) == ([Tombstone, GiveBack], None)
    assert world.held() == [] and world.marker(owner) is None


def test_a_committed_abandoned_swap_stays_dead_when_the_tombstones_reply_is_lost() -> None:
    world = World()
    lease = world.lease()
    assert not world.swap(lease, "lost")  # committed, but we never heard
    owner = abandoned(world, lease)
    ops, error = world.drive(core.clean_up(world.known, owner, lease, world.config),
                             faults=["lost", "ok"])  # fmt: skip
    assert (ops, error) == ([Tombstone, RetireLease, Wait, Tombstone, GiveBack], None)
    assert world.held() == [], "the abandoned entry holds its ranges again"
