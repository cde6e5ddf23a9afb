"""``wait_free`` on etcd: a read of the section, then a watch on its markers.

It must return True soon after a key of ``part`` held at the call comes free (released,
revoked, expired), at once when nothing of ``part`` is held, False when its ctx ends (promptly
on cancel), survive the member it watches dying, write nothing and leave no thread behind.

``is_held`` on etcd is that read alone: it must answer from one read, write nothing, start no
thread, retry a read that etcd does not answer until its ctx ends, and then raise the ctx's
error, never answer False.

The tests never sleep to let something happen: the hook ``watching`` of
``lessor.etcd.watch.wait_free`` says when a watch is in place (so a release comes after it),
and results arrive on queues awaited with bounds. Timings are printed (``pytest -s``).
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pyetcd
import pytest

from lessor import Cancelled, Context, CorruptSection, DeadlineExceeded, Partition, PermissionDenied
from lessor.contract import LeaseScope
from lessor.etcd import EtcdLessor
from lessor.etcd import watch as watch_module
from lessor.etcd.keys import SectionKeys
from lessor.etcd.state import SectionTxns
from lessor.testing import FaultProxy, LocalEtcd, LocalEtcdCluster
from tests.support.etcd_admin import enable_auth

from .conftest import Spawn

P = Partition
BOUND = 3.0  # seconds within which "soon" must have happened, on a loaded 2-core machine


def wait_free(lessor: EtcdLessor, ctx: Context, section_id: str, part: Partition) -> bool:
    """The contract's ``Lessor.wait_free``, which checks its arguments and calls the etcd
    lessor's hook, ``_wait_free``; the hook itself where the contract has no such method yet."""
    public = getattr(lessor, "wait_free", None)
    if public is None:
        return lessor._wait_free(ctx, section_id, part)
    result: bool = public(ctx, section_id, part)
    return result


class Watches:
    """Each watch ``wait_free`` puts in place, as (revision it watches from - 1, endpoint)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._seen: queue.Queue[tuple[int, str]] = queue.Queue()
        original = watch_module.wait_free

        def hooked(ctx: Context, transport: Any, *args: Any, **kwargs: Any) -> bool:
            def watching(revision: int) -> None:
                self._seen.put((revision, transport.endpoint))

            return original(ctx, transport, *args, watching=watching, **kwargs)

        monkeypatch.setattr(watch_module, "wait_free", hooked)

    def next(self, timeout: float = 10.0) -> tuple[int, str]:
        try:
            return self._seen.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no watch was put in place within {timeout}s") from None


@pytest.fixture
def watches(monkeypatch: pytest.MonkeyPatch) -> Watches:
    return Watches(monkeypatch)


class Waiting:
    """``wait_free`` running in a thread of its own."""

    def __init__(self, lessor: EtcdLessor, ctx: Context, section_id: str, part: Partition):
        self._result: queue.Queue[tuple[bool | BaseException, float]] = queue.Queue()

        def run() -> None:
            try:
                result: bool | BaseException = wait_free(lessor, ctx, section_id, part)
            except BaseException as e:  # handed to the test
                result = e
            self._result.put((result, time.monotonic()))

        self.thread = threading.Thread(target=run, name="test wait_free caller", daemon=True)
        self.thread.start()

    def result(self, timeout: float) -> tuple[bool | BaseException, float]:
        """What it returned (or raised) and when; fails if it has not within ``timeout``."""
        try:
            found = self._result.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"wait_free still waiting after {timeout}s") from None
        self.thread.join(timeout=5)
        return found

    def still_waiting(self, window: float) -> bool:
        """Whether it is still waiting ``window`` seconds from now (a negative check)."""
        self.thread.join(timeout=window)
        return self.thread.is_alive()


@pytest.fixture
def make(etcd_server: LocalEtcd, prefix: str) -> Iterator[Callable[..., EtcdLessor]]:
    """Lessors on the session's etcd under the test's prefix; closed at teardown."""
    made: list[EtcdLessor] = []

    def new(**options: Any) -> EtcdLessor:
        lessor = EtcdLessor(etcd_server.endpoints, prefix=prefix, **options)
        made.append(lessor)
        return lessor

    yield new
    for lessor in made:
        lessor.close()


@pytest.fixture
def admin(client: Any) -> Any:
    """conftest's pyetcd client, by the name these tests give it."""
    return client


def revision(admin: Any) -> int:
    """The etcd cluster's current revision."""
    request = pyetcd.etcdrpc.RangeRequest(key=b"\0", serializable=False)
    return int(admin.kvstub.Range(request, timeout=5).header.revision)


def hold(lessor: EtcdLessor, section_id: str, part: Partition, dur: float = 60) -> LeaseScope:
    """A lease on ``part``, held until the scope is exited (``release``)."""
    scope = lessor.lease(section_id, part, dur)
    lease = scope.__enter__()
    assert lease.partitions == [part]
    return scope


def release(scope: LeaseScope) -> float:
    scope.__exit__(None, None, None)
    return time.monotonic()


def our_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "lessor wait_free" and t.is_alive()]


# -- True at once, False at the end of ctx, nothing written -------------------------------------


def test_true_at_once_when_nothing_of_part_is_held(
    make: Callable[..., EtcdLessor], admin: Any
) -> None:
    a, b = make(), make()
    ctx = Context.background().with_timeout(30)
    assert wait_free(a, ctx, "empty", P(0, 10))  # no section at all
    scope = hold(b, "s", P(10, 20))
    before = revision(admin)
    started = time.monotonic()
    assert wait_free(a, ctx, "s", P(0, 10))  # [10, 20) is held: [0, 10) touches, no overlap
    assert wait_free(a, ctx, "s", P(20, 30))
    assert wait_free(a, ctx, "other", P(10, 20))  # sections are independent
    took = time.monotonic() - started
    assert revision(admin) == before  # a read is all it did
    assert our_threads() == []  # nothing to watch: no thread was started
    release(scope)
    assert took < BOUND, took


def test_false_at_the_deadline_and_nothing_written(
    make: Callable[..., EtcdLessor], admin: Any
) -> None:
    a, b = make(), make()
    scope = hold(b, "s", P(0, 100))
    before = revision(admin)
    started = time.monotonic()
    assert not wait_free(a, Context.background().with_timeout(0.5), "s", P(50, 60))
    took = time.monotonic() - started
    assert revision(admin) == before  # a read and a watch: no write
    assert our_threads() == []
    release(scope)
    assert 0.45 <= took < 0.5 + BOUND, took
    print(f"\nwait_free returned False {took - 0.5:+.3f}s after its deadline")


def test_a_done_ctx_is_false_at_once(make: Callable[..., EtcdLessor], admin: Any) -> None:
    a, b = make(), make()
    scope = hold(b, "s", P(0, 100))
    ctx = Context.background()
    ctx.cancel()
    assert not wait_free(a, ctx, "s", P(0, 10))
    assert not wait_free(a, Context.background().with_timeout(0), "s", P(0, 10))
    release(scope)


def test_cancel_wakes_it_promptly(make: Callable[..., EtcdLessor], watches: Watches) -> None:
    a, b = make(), make()
    scope = hold(b, "s", P(0, 100))
    ctx = Context.background().with_timeout(60)
    waiting = Waiting(a, ctx, "s", P(0, 10))
    watches.next()  # the watch is in place: the wait is on the stream
    cancelled = time.monotonic()
    ctx.cancel()
    result, when = waiting.result(timeout=BOUND)
    assert result is False
    assert our_threads() == []
    release(scope)
    assert when - cancelled < 1.0, when - cancelled
    print(f"\nwait_free returned {(when - cancelled) * 1e3:.1f} ms after cancel()")


# -- True soon after a key comes free -----------------------------------------------------------


def test_wakes_soon_after_another_lessor_releases(
    make: Callable[..., EtcdLessor], watches: Watches
) -> None:
    a, b, c = make(), make(), make()
    held = hold(b, "s", P(0, 100))
    elsewhere = hold(c, "s", P(200, 300))
    waiting = Waiting(a, Context.background().with_timeout(60), "s", P(50, 150))
    watches.next()
    release(elsewhere)  # not a key of [50, 150): no reason to wake
    assert waiting.still_waiting(0.5)
    released = release(held)
    result, when = waiting.result(timeout=BOUND)
    assert result is True
    assert when - released < BOUND
    assert our_threads() == []
    print(f"\nwait_free returned {(when - released) * 1e3:.1f} ms after the release")


def test_wakes_when_the_holders_etcd_lease_is_revoked(
    make: Callable[..., EtcdLessor], watches: Watches, admin: Any, prefix: str
) -> None:
    a, b = make(), make()
    scope = hold(b, "s", P(0, 100))
    [(_, marker)] = list(admin.get_prefix(SectionKeys.of(prefix, "s").markers))
    waiting = Waiting(a, Context.background().with_timeout(60), "s", P(0, 10))
    watches.next()
    revoked = time.monotonic()
    admin.revoke_lease(marker.lease_id)  # as etcd does at expiry: the marker goes with it
    result, when = waiting.result(timeout=BOUND)
    assert result is True
    assert when - revoked < BOUND
    release(scope)


def test_wakes_when_a_killed_holders_lease_expires(
    etcd_server: LocalEtcd,
    make: Callable[..., EtcdLessor],
    watches: Watches,
    admin: Any,
    prefix: str,
    spawn: Spawn,
) -> None:
    section = f"crash-{uuid.uuid4().hex[:12]}"
    part = P(0x10, 0x20)
    child = spawn(
        "holder",
        "crash",
        {"endpoints": etcd_server.endpoints, "prefix": prefix, "section": section,
         "range": str(part), "dur": 1.0},
    )  # fmt: skip
    assert child.expect(timeout=30) == "ready"
    child.send("go")
    assert json.loads(child.expect(timeout=30))["ranges"] == [str(part)]
    [(_, marker)] = list(admin.get_prefix(SectionKeys.of(prefix, section).markers))
    ttl = admin.get_lease_info(marker.lease_id).grantedTTL

    a = make()
    waiting = Waiting(a, Context.background().with_timeout(60), section, P(0, 0x18))
    watches.next()
    killed = time.monotonic()
    assert child.kill() != 0
    result, when = waiting.result(timeout=ttl + 10)
    assert result is True
    # etcd deletes the marker within the TTL of the last grant (before the kill), and its
    # expiry checker runs every 0.5 s.
    assert when - killed < ttl + 0.5 + 1.0, (when - killed, ttl)
    assert list(admin.get_prefix(SectionKeys.of(prefix, section).markers)) == []
    print(f"\nwait_free returned {when - killed:.2f}s after the kill (etcd lease TTL {ttl}s)")


# -- a stream that breaks ------------------------------------------------------------------------


@pytest.mark.parametrize("gap", ["still held", "released in the gap"])
def test_a_compacted_revision_is_read_again(
    make: Callable[..., EtcdLessor],
    watches: Watches,
    admin: Any,
    monkeypatch: pytest.MonkeyPatch,
    gap: str,
) -> None:
    """Between the read and the watch, etcd compacts past the read's revision: the watch
    cannot start there, so the section is read again (and a holder gone meanwhile is True)."""
    a, b = make(), make()
    scope = hold(b, "s", P(0, 100))
    transport = a._transport
    real_watch = transport.watch
    starts: list[int] = []

    def watch(key: bytes, range_end: bytes, start_revision: int, *args: Any, **kw: Any) -> Any:
        starts.append(start_revision)
        if len(starts) == 1:
            if gap == "released in the gap":
                release(scope)
            admin.put(b"/compact-me", b"1")
            admin.put(b"/compact-me", b"2")
            admin.compact(revision(admin))  # past start_revision: it is gone
        return real_watch(key, range_end, start_revision, *args, **kw)

    monkeypatch.setattr(transport, "watch", watch)
    waiting = Waiting(a, Context.background().with_timeout(60), "s", P(0, 10))
    if gap == "released in the gap":
        result, _ = waiting.result(timeout=BOUND)
        assert result is True
        assert len(starts) == 1  # the second read saw the marker gone: no second watch
        return
    # etcd confirms a watch first and says it was compacted next: two watches were in place
    first, _ = watches.next()
    second, _ = watches.next()
    assert (first + 1, second + 1) == tuple(starts)  # the second from the second read
    assert second > first
    released = release(scope)
    result, when = waiting.result(timeout=BOUND)
    assert result is True
    assert when - released < BOUND


@pytest.fixture
def cluster() -> Iterator[LocalEtcdCluster]:
    with LocalEtcdCluster() as c:
        yield c


@pytest.mark.parametrize("watched", ["follower", "leader"])
def test_survives_the_watched_member_being_killed(cluster: LocalEtcdCluster, watched: str) -> None:
    leader = cluster.leader()
    follower = next(i for i in range(3) if i != leader)
    target = leader if watched == "leader" else follower
    other = next(i for i in range(3) if i not in (leader, follower))  # B's member: it stays

    def on(index: int) -> list[str]:
        eps = cluster.endpoints
        return [eps[index], *(e for e in eps if e != eps[index])]

    with (
        EtcdLessor(on(other), endpoint_order="given") as b,
        EtcdLessor(on(target), endpoint_order="given") as a,
        pytest.MonkeyPatch.context() as monkeypatch,
    ):
        watches = Watches(monkeypatch)
        scope = hold(b, "s", P(0, 100))
        waiting = Waiting(a, Context.background().with_timeout(60), "s", P(0, 10))
        first, endpoint = watches.next()
        assert endpoint == cluster.endpoints[target]
        killed = time.monotonic()
        cluster.kill(target)
        again, endpoint = watches.next(timeout=20)  # read again elsewhere, and watching
        rewatched = time.monotonic()
        assert endpoint != cluster.endpoints[target]
        assert again >= first
        assert waiting.still_waiting(0.3)  # B still holds: no reason to wake
        released = release(scope)
        result, when = waiting.result(timeout=BOUND)
        assert result is True
        assert when - released < BOUND
    print(f"\nkilled the watched {watched}: watching again after {rewatched - killed:.2f}s; "
          f"woke {(when - released) * 1e3:.1f} ms after the release")  # fmt: skip


# -- permanent errors, threads ------------------------------------------------------------------


def test_a_corrupt_section_is_raised(make: Callable[..., EtcdLessor], admin: Any, prefix: str):
    admin.put(SectionKeys.of(prefix, "broken").value, b"not json")
    with pytest.raises(CorruptSection, match="broken"):
        wait_free(make(), Context.background().with_timeout(30), "broken", P(0, 10))


def test_permission_denied_is_raised() -> None:
    with LocalEtcd() as server:
        enable_auth(server)
        with EtcdLessor(server.endpoints, user="app", password="apppw", prefix="/lessor/") as a:
            with pytest.raises(PermissionDenied):
                wait_free(a, Context.background().with_timeout(30), "s", P(0, 10))
    assert our_threads() == []


def test_no_thread_outlives_a_call(make: Callable[..., EtcdLessor], watches: Watches) -> None:
    a, b = make(), make()
    scope = hold(b, "s", P(0, 100))
    before = set(threading.enumerate())
    # every way out: at once, deadline, cancel, freed
    assert wait_free(a, Context.background().with_timeout(30), "s", P(100, 200))
    assert not wait_free(a, Context.background().with_timeout(0.3), "s", P(0, 10))
    assert our_threads() == []
    ctx = Context.background().with_timeout(60)
    waiting = Waiting(a, ctx, "s", P(0, 10))
    watches.next()
    ctx.cancel()
    assert waiting.result(timeout=BOUND)[0] is False
    assert our_threads() == []
    waiting = Waiting(a, Context.background().with_timeout(60), "s", P(0, 10))
    watches.next()
    release(scope)
    assert waiting.result(timeout=BOUND)[0] is True
    assert our_threads() == []
    # gRPC's own threads for the streams (request senders, channel pollers) end as well; the
    # lessors' own machinery (B's reaper) is not wait_free's.
    for thread in set(threading.enumerate()) - before:
        if not thread.name.startswith("lessor reaper"):
            thread.join(timeout=5)
            assert not thread.is_alive(), thread


# -- is_held: one read ---------------------------------------------------------------------------


def test_is_held_is_one_read_and_writes_nothing(
    make: Callable[..., EtcdLessor], admin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = make(), make()
    reads: list[str] = []
    real_read = SectionTxns.read

    def read(self: SectionTxns, *args: Any, **kwargs: Any) -> Any:
        reads.append(self.keys.section_id)
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(SectionTxns, "read", read)
    ctx = Context.background().with_timeout(30)
    assert a.is_held(ctx, "empty", P(0, 10)) is False  # no section at all
    scope = hold(b, "s", P(10, 20))
    before = revision(admin)
    reads.clear()
    assert a.is_held(ctx, "s", P(15, 25)) is True
    assert a.is_held(ctx, "s", P(0, 10)) is False  # touches [10, 20), no overlap
    assert b.is_held(ctx, "s", P(19, 20)) is True  # its own lease counts too
    assert a.is_held(ctx, "other", P(10, 20)) is False  # sections are independent
    assert reads == ["s", "s", "s", "other"]  # one read each
    assert revision(admin) == before  # and nothing written
    assert our_threads() == []
    release(scope)
    assert a.is_held(ctx, "s", P(0, 100)) is False  # the marker is gone


def test_is_held_retries_a_read_etcd_does_not_answer_until_ctx_ends(
    etcd_server: LocalEtcd, make: Callable[..., EtcdLessor], prefix: str
) -> None:
    b = make()
    scope = hold(b, "s", P(0, 10))
    with (
        FaultProxy(etcd_server.endpoint) as link,
        EtcdLessor([link.address], prefix=prefix, rpc_timeout=0.3) as far,
    ):
        ctx = Context.background().with_timeout(30)
        assert far.is_held(ctx, "s", P(0, 10)) is True
        link.blackhole()
        # Deadline: the ctx's error, never False ("free"), after several timed-out reads.
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            far.is_held(Context.background().with_timeout(1.0), "s", P(20, 30))
        took = time.monotonic() - started
        assert 0.95 <= took < 1.0 + BOUND, took
        # Cancel: noticed when the read in progress ends (within rpc_timeout).
        cancelled = Context.background()
        timer = threading.Timer(0.5, cancelled.cancel)
        timer.start()
        with pytest.raises(Cancelled):
            far.is_held(cancelled, "s", P(20, 30))
        timer.join()
        # Healed while it retries: it answers.
        answer: queue.Queue[bool | BaseException] = queue.Queue()

        def look() -> None:
            try:
                answer.put(far.is_held(Context.background().with_timeout(60), "s", P(5, 6)))
            except BaseException as e:  # handed to the test
                answer.put(e)

        looking = threading.Thread(target=look, daemon=True)
        looking.start()
        looking.join(timeout=1.0)  # a few reads time out meanwhile
        assert looking.is_alive() and answer.empty()
        link.heal()
        assert answer.get(timeout=BOUND + 5) is True
        looking.join(timeout=5)
    release(scope)
    print(f"\nis_held raised DeadlineExceeded {took - 1.0:+.3f}s after its deadline")


def test_is_held_raises_etcd_s_permanent_answers(
    make: Callable[..., EtcdLessor], admin: Any, prefix: str
) -> None:
    admin.put(SectionKeys.of(prefix, "broken").value, b"not json")
    with pytest.raises(CorruptSection, match="broken"):
        make().is_held(Context.background().with_timeout(30), "broken", P(0, 10))
