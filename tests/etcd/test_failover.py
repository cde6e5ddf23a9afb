"""The etcd lessor against a three-member cluster whose members fail (``LocalEtcdCluster``).

In every case a second lessor holds a range through the fault, and the first must never be
given it: the holdings are recorded and checked for overlaps and token inversions
(:mod:`lessor.testing.history`). Timings are printed (``pytest -s``).

DESIGN: "Leader loss: acquisitions resume within the election timeout plus one second"; the
cluster's election timeout is 0.5 s, so the bound is 1.5 s. A call that a member accepts but
never answers (a write forwarded to a dead leader, a paused member) must therefore not take all
the time left: the lessor gives each call at most ``rpc_timeout`` (1 s) and, with other members
to try, at most half of what remains.

Every test runs with both flavours of the etcd lessor (the ``flavour`` fixture): ``EtcdLessor``,
and ``AsyncEtcdLessor`` driven through the sync interface, with the same bounds.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lessor import Context, DeadlineExceeded, LessorError, Partition, Unavailable
from lessor.etcd import EtcdLessor
from lessor.testing import (
    FaultProxy,
    History,
    Holding,
    LocalEtcdCluster,
    find_overlaps,
    find_token_inversions,
)
from tests.support.etcd_flavours import Flavour, SyncOverAsyncEtcd

AnyLessor = EtcdLessor | SyncOverAsyncEtcd  # of either flavour

P = Partition
SECTION = "failover"
ELECTION = 0.5  # LocalEtcdCluster's election timeout
BOUND = ELECTION + 1.0  # DESIGN: leader loss costs at most the election timeout plus 1 s
DEFAULT_RPC_TIMEOUT = 1.0  # EtcdLessor's

needs_root = pytest.mark.needs_root("iptables")  # for isolation


@pytest.fixture
def cluster() -> Iterator[LocalEtcdCluster]:
    with LocalEtcdCluster() as c:
        yield c


@pytest.fixture
def history() -> Iterator[History]:
    h = History()
    yield h
    holdings = h.holdings
    assert not find_overlaps(holdings), "\n".join(str(o) for o in find_overlaps(holdings))
    assert not find_token_inversions(holdings), find_token_inversions(holdings)


@pytest.fixture
def lessors(flavour: Flavour) -> Iterator[Callable[..., AnyLessor]]:
    """``make(cluster, member_index, **options)``: a lessor of the test's flavour whose calls
    go to that member first; all are closed at teardown."""
    made: list[AnyLessor] = []

    def make(cluster: LocalEtcdCluster, index: int, **options: Any) -> AnyLessor:
        # The member first, the rest after it; Channels may start on a random endpoint, so
        # build lessors until one starts on the member (public API only; ~3 on average).
        endpoints = cluster.endpoints[index:] + cluster.endpoints[:index]
        for _ in range(200):
            lessor = flavour(endpoints, **options)
            if lessor.endpoint == cluster.endpoints[index]:
                made.append(lessor)
                return lessor
            lessor.close()
        pytest.fail(f"no lessor started on {cluster.endpoints[index]}")

    yield make
    for lessor in made:
        lessor.close()


@contextlib.contextmanager
def holding(
    history: History, holder: str, lessor: AnyLessor, part: Partition, dur: float, ctx: Context
) -> Iterator[Any]:
    """``lessor.lease(...)``, recorded in ``history`` from grant to the earlier of its
    deadline and its release."""
    with lessor.lease(SECTION, part, dur, ctx=ctx) as lease:
        start = time.monotonic()
        try:
            yield lease
        finally:
            end = min(time.monotonic(), lease.deadline)
            ranges = tuple(lease.partitions)
            history.record(Holding(holder, SECTION, ranges, start, end, lease.token))


def acquire_until_granted(
    history: History, lessor: AnyLessor, part: Partition, *, give_up: float = 20.0,
    since: float | None = None,
) -> tuple[float, list[Any], list[str]]:  # fmt: skip
    """Acquire ``part`` again and again until a lease is granted; the seconds that took (from
    ``since``, else from now), the granted ranges, and the errors on the way."""
    started = time.monotonic() if since is None else since
    errors: list[str] = []
    while True:
        attempt = time.monotonic()
        try:
            ctx = Context.background().with_timeout(10.0)
            with holding(history, "A", lessor, part, 10, ctx) as lease:
                return time.monotonic() - started, list(lease.partitions), errors
        except LessorError as e:
            errors.append(f"{type(e).__name__} after {time.monotonic() - attempt:.2f}s: {e}")
        assert time.monotonic() - started < give_up, f"no lease in {give_up}s: {errors}"


@contextlib.contextmanager
def b_holds(
    history: History, cluster: LocalEtcdCluster, index: int, make: Callable[..., AnyLessor]
) -> Iterator[AnyLessor]:
    """A second lessor, on member ``index``, holds [0, 100) for 30 s inside the block."""
    b = make(cluster, index)
    with holding(history, "B", b, P(0, 100), 30, Context.background()) as lease:
        assert lease.partitions == [P(0, 100)]
        yield b


def warm(history: History, lessor: AnyLessor, *, b_holds: bool = True) -> None:
    """One acquisition, so the lessor is connected and has a cached state and an etcd lease:
    its next acquisition is one compare-and-swap, a write."""
    _, parts, errors = acquire_until_granted(history, lessor, P(0, 200), give_up=5)
    assert parts == [P(100, 200) if b_holds else P(0, 200)] and not errors


# -- (a) the member the lessor talks to is killed --------------------------------------------


def test_killed_member_fails_over(
    cluster: LocalEtcdCluster, history: History, lessors: Callable[..., AnyLessor]
) -> None:
    target = random.randrange(3)
    a = lessors(cluster, target)
    with b_holds(history, cluster, target, lessors):
        warm(history, a)
        was_leader = target == cluster.leader()
        killed = time.monotonic()
        cluster.kill(target)
        took, parts, errors = acquire_until_granted(history, a, P(0, 200), since=killed)
        assert parts == [P(100, 200)]  # B's range is still B's
        assert a.endpoint != cluster.endpoints[target]
        assert took < BOUND, errors
    print(f"\nkilled the lessor's member ({'leader' if was_leader else 'follower'}): "
          f"granted again after {took:.3f}s; errors on the way: {errors}")  # fmt: skip


# -- (b) the leader is killed ------------------------------------------------------------------


def _leader_killed(
    cluster: LocalEtcdCluster, history: History, lessors: Callable[..., AnyLessor],
    talks_to: str, **options: Any,
) -> tuple[float, list[str]]:  # fmt: skip
    leader = cluster.leader()
    index = leader if talks_to == "leader" else (leader + 1) % 3
    a = lessors(cluster, index, **options)
    with b_holds(history, cluster, (leader + 2) % 3, lessors):
        warm(history, a)
        killed = time.monotonic()
        cluster.kill(leader)
        took, parts, errors = acquire_until_granted(history, a, P(0, 200), since=killed)
        assert parts == [P(100, 200)]
    print(f"\nleader killed, lessor on the {talks_to} {options or ''}: granted again after "
          f"{took:.3f}s (bound {BOUND}s); errors on the way: {errors}")  # fmt: skip
    return took, errors


@pytest.mark.parametrize(
    ("talks_to", "options"),
    [
        ("leader", {}),
        # A follower forwards the swap to the dead leader, and etcd never answers it: only a
        # per-call timeout short enough to fit the bound lets the lessor move on in time.
        ("follower", {"rpc_timeout": 1.0}),
        pytest.param("follower", {}),
    ],
    ids=["on-leader", "on-follower-rpc-timeout-1s", "on-follower-defaults"],
)
def test_leader_killed_acquisitions_resume_within_election_timeout_plus_1s(
    cluster: LocalEtcdCluster, history: History, lessors: Callable[..., AnyLessor],
    talks_to: str, options: dict[str, Any],
) -> None:  # fmt: skip
    took, errors = _leader_killed(cluster, history, lessors, talks_to, **options)
    assert took <= BOUND, f"{took:.3f}s > {BOUND}s; errors: {errors}"


# -- (c) the member the lessor talks to is paused ----------------------------------------------


@pytest.mark.parametrize("rpc_timeout", [DEFAULT_RPC_TIMEOUT, 3.0])
def test_paused_member_fails_over_after_one_rpc_timeout(
    cluster: LocalEtcdCluster, history: History, lessors: Callable[..., AnyLessor],
    rpc_timeout: float,
) -> None:  # fmt: skip
    target = random.randrange(3)
    a = lessors(cluster, target, rpc_timeout=rpc_timeout)
    with b_holds(history, cluster, (target + 1) % 3, lessors):
        warm(history, a)
        with cluster.paused(target):
            took, parts, errors = acquire_until_granted(history, a, P(0, 200), give_up=15)
            assert parts == [P(100, 200)]
            assert a.endpoint != cluster.endpoints[target]
            assert took <= rpc_timeout + 1.0, errors
    print(f"\npaused the lessor's member, rpc_timeout={rpc_timeout}: granted again after "
          f"{took:.3f}s; errors on the way: {errors}")  # fmt: skip


def test_paused_member_within_a_deadline_shorter_than_rpc_timeout(
    cluster: LocalEtcdCluster, history: History, lessors: Callable[..., AnyLessor]
) -> None:
    target = random.randrange(3)
    a = lessors(cluster, target)
    warm(history, a, b_holds=False)
    with cluster.paused(target):
        ctx = Context.background().with_timeout(3.0)
        with holding(history, "A", a, P(0, 200), 10, ctx) as lease:
            assert lease.partitions == [P(0, 200)]


# -- (d) the member the lessor talks to is isolated --------------------------------------------


@needs_root
def test_isolated_member_fails_over(
    cluster: LocalEtcdCluster, history: History, lessors: Callable[..., AnyLessor]
) -> None:
    target = random.randrange(3)
    a = lessors(cluster, target)
    # B acquired through the member that is then cut off: its entry lives in the majority.
    with b_holds(history, cluster, target, lessors):
        warm(history, a)
        was_leader = target == cluster.leader()
        with cluster.isolated(target):
            took, parts, errors = acquire_until_granted(history, a, P(0, 200))
            assert parts == [P(100, 200)]
            assert a.endpoint != cluster.endpoints[target]
            assert took <= DEFAULT_RPC_TIMEOUT + 1.0, errors
        _, parts, _ = acquire_until_granted(history, a, P(0, 200), give_up=5)
        assert parts == [P(100, 200)]
    print(f"\nisolated the lessor's member ({'leader' if was_leader else 'follower'}): granted "
          f"again after {took:.3f}s; errors on the way: {errors}")  # fmt: skip


# -- (e) every member is down --------------------------------------------------------------------


def test_all_members_down_is_unavailable_by_the_deadline(
    cluster: LocalEtcdCluster, history: History, lessors: Callable[..., AnyLessor]
) -> None:
    a = lessors(cluster, random.randrange(3))
    with b_holds(history, cluster, random.randrange(3), lessors):
        warm(history, a)
        for i in range(3):
            cluster.kill(i)
        called: list[object] = []
        started = time.monotonic()
        ctx = Context.background().with_timeout(2.0)
        with pytest.raises(Unavailable) as e:
            a.with_lease(ctx, SECTION, P(0, 200), 10, lambda c, p: called.append(p))
        took = time.monotonic() - started
        assert not called
        assert took < 2.5
        assert "'failover'" in str(e.value)
        assert any(endpoint in str(e.value) for endpoint in cluster.endpoints)

        for i in range(3):
            cluster.restart(i, wait=False)
        back, parts, _ = acquire_until_granted(history, a, P(0, 200))
        assert parts == [P(100, 200)]  # B's etcd lease survived the restart
    print(f"\nall members down: Unavailable after {took:.3f}s (deadline 2 s): {e.value}\n"
          f"restarted: granted again after {back:.3f}s")  # fmt: skip


# -- (f) quorum lost -----------------------------------------------------------------------------


def _lose_quorum(
    cluster: LocalEtcdCluster, history: History, lessors: Callable[..., AnyLessor],
    survivor: int,
) -> tuple[AnyLessor, BaseException, float]:  # fmt: skip
    """Kill every member but ``survivor``, which the lessor talks to; one acquisition with a
    2 s deadline must fail in time without calling back."""
    a = lessors(cluster, survivor)
    warm(history, a)
    for i in range(3):
        if i != survivor:
            cluster.kill(i)
    called: list[object] = []
    started = time.monotonic()
    ctx = Context.background().with_timeout(2.0)
    with pytest.raises((Unavailable, DeadlineExceeded)) as e:
        a.with_lease(ctx, SECTION, P(0, 200), 10, lambda c, p: called.append(p))
    took = time.monotonic() - started
    assert not called
    assert took < 2.5
    assert isinstance(e.value, Unavailable), f"quorum loss raised {e.value!r}"
    assert "'failover'" in str(e.value)
    return a, e.value, took


def test_quorum_lost_is_unavailable_by_the_deadline_and_recovers(
    cluster: LocalEtcdCluster, history: History, lessors: Callable[..., AnyLessor]
) -> None:
    """The lessor talks to a follower, which cannot even queue the write: nothing of the
    failed acquisition survives the outage."""
    leader = cluster.leader()
    survivor = (leader + 1) % 3
    with b_holds(history, cluster, (survivor + 1) % 3, lessors):
        a, error, took = _lose_quorum(cluster, history, lessors, survivor)
        for i in range(3):
            if i != survivor:
                cluster.restart(i, wait=False)
        back, parts, _ = acquire_until_granted(history, a, P(0, 200))
        assert parts == [P(100, 200)]
    print(f"\nquorum lost: {type(error).__name__} after {took:.3f}s (deadline 2 s): {error}\n"
          f"restarted: granted again after {back:.3f}s")  # fmt: skip


def test_quorum_lost_on_the_leader_leaves_nothing_held_after_recovery(
    cluster: LocalEtcdCluster, history: History, lessors: Callable[..., AnyLessor]
) -> None:
    """The lessor talks to the leader, which appends the swap to its log but cannot commit
    it. The first member back votes for the survivor (its log is longer), so the swap of the
    acquisition that failed commits then. Nothing may stay held by it."""
    survivor = cluster.leader()
    with b_holds(history, cluster, (survivor + 1) % 3, lessors):
        a, _, _ = _lose_quorum(cluster, history, lessors, survivor)
        for i in range(3):
            if i != survivor:
                cluster.restart(i)  # one at a time: the survivor's longer log wins
        _, parts, _ = acquire_until_granted(history, a, P(0, 200))
        assert parts == [P(100, 200)], "the failed acquisition's ranges are still held"


# -- (g) the endpoint the lessor talks to is unreachable -----------------------------------------


@pytest.mark.parametrize("how", ["refused", "blackholed"])
def test_an_unreachable_endpoint_is_passed_over(
    cluster: LocalEtcdCluster, history: History, flavour: Flavour, how: str
) -> None:
    """The first endpoint given is unreachable from the start: nothing listens there (the
    connection is refused), or a link that delivers nothing (``FaultProxy.blackhole``). The
    lessor's first acquisitions go to the next endpoint: at once when refused, within one
    ``rpc_timeout`` when nothing answers."""
    with contextlib.ExitStack() as stack:
        if how == "refused":
            with FaultProxy(cluster.endpoints[0]) as gone:
                unreachable = gone.address  # a loopback port nobody listens on once it closed
        else:
            link = stack.enter_context(FaultProxy(cluster.endpoints[0]))
            link.blackhole()
            unreachable = link.address
        a = stack.enter_context(
            flavour([unreachable, *cluster.endpoints[1:]], endpoint_order="given")
        )
        assert a.endpoint == unreachable
        took, parts, errors = acquire_until_granted(history, a, P(0, 200), give_up=10)
        assert parts == [P(0, 200)]
        assert a.endpoint != unreachable
        bound = 1.0 if how == "refused" else DEFAULT_RPC_TIMEOUT + 1.0
        assert took <= bound, errors
        _, parts, errors = acquire_until_granted(history, a, P(0, 200), give_up=5)
        assert parts == [P(0, 200)] and not errors
    print(f"\nan unreachable endpoint ({how}) first: granted after {took:.3f}s; errors on the "
          f"way: {errors}")  # fmt: skip


# -- everything at once, under contention --------------------------------------------------------


def test_contention_through_a_series_of_faults(
    cluster: LocalEtcdCluster, history: History, flavour: Flavour
) -> None:
    """Two lessors, two threads each, lease random overlapping ranges while the leader is
    killed and restarted, a member is paused and, as root, one is isolated. No key is ever
    held twice at once, tokens order the holders of each key, and every thread makes
    progress after the faults."""
    stop = threading.Event()
    granted: dict[str, list[float]] = {}
    failures: list[BaseException] = []

    def worker(name: str, lessor: AnyLessor, seed: int) -> None:
        rng = random.Random(seed)
        times = granted.setdefault(name, [])
        while not stop.is_set():
            low = rng.randrange(0, 60)
            part = P(low, low + rng.randrange(1, 40))
            try:
                ctx = Context.background().with_timeout(3.0)
                with holding(history, name, lessor, part, 2.0, ctx) as lease:
                    if lease.partitions:
                        times.append(time.monotonic())
                    lease.ctx.wait(rng.uniform(0, 0.01))
            except LessorError:
                pass  # during a fault; what matters is what was granted
            except BaseException as e:
                failures.append(e)
                return

    with (
        flavour(cluster.endpoints, rpc_timeout=1.0) as one,
        flavour(cluster.endpoints, rpc_timeout=1.0) as two,
    ):
        threads = [
            threading.Thread(target=worker, args=(f"{n}.{t}", lessor, 100 * i + t), daemon=True)
            for i, (n, lessor) in enumerate((("one", one), ("two", two)))
            for t in range(2)
        ]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)  # a fault-free start
            leader = cluster.leader()
            cluster.kill(leader)
            time.sleep(1.5)
            cluster.restart(leader, wait=False)
            time.sleep(1.0)
            victim = random.randrange(3)
            with cluster.paused(victim):
                time.sleep(1.5)
            if cluster.isolation:  # root with iptables
                with cluster.isolated(cluster.leader()):
                    time.sleep(1.5)
            cluster.wait_for_leader()
            after_faults = time.monotonic()
            time.sleep(2.0)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=15)
        assert not any(t.is_alive() for t in threads)
    assert not failures, failures
    for name, times in granted.items():
        assert any(t > after_faults for t in times), f"{name} made no progress after the faults"
    holdings = history.holdings
    print(f"\ncontention through faults: {len(holdings)} holdings, "
          f"{sum(1 for h in holdings if h.ranges)} with ranges")  # fmt: skip
