"""The three-member local etcd cluster and its faults (``lessor.testing.cluster``) do what they say.

Each test gets a cluster of its own. Isolation needs root and iptables: without them the
isolation tests are skipped, saying what is missing, and fail under CI
(:mod:`tests.support.needs`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import grpc
import pyetcd.etcdrpc as rpc
import pytest

from lessor.testing import LocalEtcdCluster

needs_root = pytest.mark.needs_root("iptables")  # for isolation


@pytest.fixture
def cluster() -> Iterator[LocalEtcdCluster]:
    with LocalEtcdCluster() as c:  # isolation on when this machine allows it
        yield c


def put(endpoint: str, key: str, value: str, timeout: float = 2.0) -> int:
    """Put through ``endpoint``; the revision of the write."""
    with grpc.insecure_channel(endpoint) as channel:
        response = rpc.KVStub(channel).Put(
            rpc.PutRequest(key=key.encode(), value=value.encode()), timeout=timeout
        )
    return int(response.header.revision)


def get(endpoint: str, key: str, timeout: float = 2.0, *, serializable: bool = True) -> str | None:
    """What ``endpoint`` itself has for ``key`` (a serializable read needs no leader)."""
    with grpc.insecure_channel(endpoint) as channel:
        response = rpc.KVStub(channel).Range(
            rpc.RangeRequest(key=key.encode(), serializable=serializable), timeout=timeout
        )
    return response.kvs[0].value.decode() if response.kvs else None


def eventually_has(endpoint: str, key: str, value: str, timeout: float = 10.0) -> float:
    """Seconds until ``endpoint`` serves ``value`` for ``key`` locally; fails after ``timeout``."""
    start = time.monotonic()
    while True:
        try:
            if get(endpoint, key, timeout=0.5) == value:
                return time.monotonic() - start
        except grpc.RpcError:
            pass
        assert time.monotonic() - start < timeout, f"{endpoint} never caught up on {key!r}"
        time.sleep(0.02)  # polling a replica: etcd notifies no one when it has caught up


def unreachable(endpoint: str, timeout: float = 0.5) -> bool:
    try:
        get(endpoint, "probe", timeout=timeout, serializable=True)
    except grpc.RpcError as e:
        return e.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
    return False


def rules_tagged(tag: str) -> list[str]:
    iptables = shutil.which("iptables")
    assert iptables is not None
    out = subprocess.run(
        [iptables, "-w", "10", "-S", "OUTPUT"], capture_output=True, text=True, check=True
    ).stdout
    return [line for line in out.splitlines() if tag in line]


def test_three_members_serve_with_one_leader(cluster: LocalEtcdCluster) -> None:
    members = cluster.members
    assert len(members) == 3
    assert len({m.host for m in members}) == 3, "each member has an address of its own"
    assert all(m.host.startswith("127.") and m.host != "127.0.0.1" for m in members)
    assert cluster.endpoints == [m.endpoint for m in members]
    assert len({m.pid for m in members}) == 3
    leader = cluster.leader()
    statuses = [s for i in range(3) if (s := cluster.status(i)) is not None]
    assert len(statuses) == 3
    assert len({s.member_id for s in statuses}) == 3
    assert {s.leader_id for s in statuses} == {statuses[leader].member_id}
    revision = put(cluster.endpoints[(leader + 1) % 3], "k", "v")  # through a follower
    for endpoint in cluster.endpoints:
        eventually_has(endpoint, "k", "v")
    assert get(cluster.endpoints[leader], "k", serializable=False) == "v"
    assert revision >= 2


def test_kill_and_restart(cluster: LocalEtcdCluster) -> None:
    leader = cluster.leader()
    follower = (leader + 1) % 3
    cluster.kill(follower)
    assert not cluster.member(follower).running
    assert unreachable(cluster.endpoints[follower])
    put(cluster.endpoints[leader], "during", "1")  # two of three still commit
    cluster.restart(follower)
    assert cluster.member(follower).running
    eventually_has(cluster.endpoints[follower], "during", "1")

    killed_at = time.monotonic()
    cluster.kill(leader)
    new_leader = cluster.wait_for_leader(timeout=5)
    elected_in = time.monotonic() - killed_at
    assert new_leader != leader
    put(cluster.endpoints[new_leader], "after", "2")
    cluster.restart(leader)  # rejoins as the member it was, as a follower
    eventually_has(cluster.endpoints[leader], "after", "2")
    assert cluster.leader() == new_leader  # pre-vote: the returning member disturbs no one
    statuses = [cluster.status(i) for i in range(3)]
    assert len({s.member_id for s in statuses if s is not None}) == 3
    print(f"\nleader killed: a new leader in {elected_in:.3f}s (election timeout 0.5s)")


def test_pause_and_resume(cluster: LocalEtcdCluster) -> None:
    leader = cluster.leader()
    follower = (leader + 1) % 3
    with cluster.paused(follower):
        assert cluster.member(follower).paused and cluster.member(follower).running
        assert cluster.status(follower, timeout=0.3) is None
        assert unreachable(cluster.endpoints[follower])
        put(cluster.endpoints[leader], "paused", "1")
    eventually_has(cluster.endpoints[follower], "paused", "1")

    cluster.pause(leader)
    try:
        new_leader = cluster.wait_for_leader(timeout=5)
        assert new_leader != leader
        put(cluster.endpoints[new_leader], "leader paused", "2")
    finally:
        cluster.resume(leader)
    eventually_has(cluster.endpoints[leader], "leader paused", "2")  # steps down, catches up


def test_isolate_needs_root_and_iptables_or_says_so() -> None:
    with LocalEtcdCluster(size=1, isolation=False) as single:
        assert single.members[0].uid is None  # runs as the caller
        with pytest.raises(RuntimeError, match="root and iptables"):
            single.isolate(0)


@needs_root
def test_isolated_follower_is_cut_off_both_ways_and_catches_up(cluster: LocalEtcdCluster) -> None:
    leader = cluster.leader()
    follower = (leader + 1) % 3
    other = 3 - leader - follower
    endpoint = cluster.endpoints[follower]
    revision = put(cluster.endpoints[leader], "before", "0")
    eventually_has(endpoint, "before", "0")
    with cluster.isolated(follower):
        assert len(rules_tagged(cluster.tag)) == 3 + 3  # the three marks, the three drops
        assert unreachable(endpoint)  # clients cannot reach it...
        assert cluster.status(follower, timeout=0.3) is None
        assert put(cluster.endpoints[other], "during", "1") > revision  # ...the rest commit
        assert cluster.wait_for_leader() == leader  # and nobody was disturbed
    assert len(rules_tagged(cluster.tag)) == 3  # heal took back exactly its own rules
    eventually_has(endpoint, "during", "1")


@needs_root
def test_isolation_cuts_what_the_member_receives(cluster: LocalEtcdCluster) -> None:
    """The member is cut off from its peers' messages too, including on the connections it
    dialled itself (from 127.0.0.1): a write it did not see stays unseen when nobody else is
    left to send it after the heal."""
    leader = cluster.leader()
    follower = (leader + 1) % 3
    endpoint = cluster.endpoints[follower]
    put(cluster.endpoints[leader], "before", "0")
    eventually_has(endpoint, "before", "0")
    with cluster.isolated(follower):
        put(cluster.endpoints[leader], "unseen", "1")
        time.sleep(1.0)  # twenty heartbeats: any leak would have delivered the write by now
        for i in range(3):
            if i != follower:
                cluster.kill(i)
    assert get(endpoint, "before") == "0"  # a serializable read: answered from its own state
    assert get(endpoint, "unseen") is None
    for i in range(3):
        if i != follower:
            cluster.restart(i, wait=False)
    cluster.wait_for_leader()
    eventually_has(endpoint, "unseen", "1")


@needs_root
def test_isolated_leader_loses_leadership_and_catches_up(cluster: LocalEtcdCluster) -> None:
    leader = cluster.leader()
    with cluster.isolated(leader):
        started = time.monotonic()
        new_leader = cluster.wait_for_leader(timeout=5)
        moved_in = time.monotonic() - started
        assert new_leader != leader
        put(cluster.endpoints[new_leader], "moved", "1")
        assert unreachable(cluster.endpoints[leader])
    eventually_has(cluster.endpoints[leader], "moved", "1")
    status = cluster.status(leader)
    assert status is not None and status.leader_id != status.member_id  # it stepped down
    print(f"\nleader isolated: a new leader in {moved_in:.3f}s")


@needs_root
def test_rules_and_processes_are_gone_even_when_a_test_fails() -> None:
    with pytest.raises(ZeroDivisionError):
        with LocalEtcdCluster(isolation=True) as c:
            tag, pids = c.tag, [m.pid for m in c.members]
            c.isolate(0)
            c.pause(1)
            assert rules_tagged(tag)
            1 / 0  # noqa: B018
    assert rules_tagged(tag) == []
    for pid in pids:
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_concurrent_clusters_use_different_addresses() -> None:
    with LocalEtcdCluster(size=1) as a, LocalEtcdCluster(size=1) as b:
        assert a.members[0].host != b.members[0].host
        assert a.tag != b.tag
        put(a.endpoints[0], "k", "a")
        assert get(b.endpoints[0], "k") is None
