"""The asyncio transports (``AsyncChannels``, ``AsyncClientTransport``) where asyncio differs.

What the threaded transports do, the asyncio ones do the same way: those tests run against both
(``test_transport_streams.py``, ``test_tls.py``, through ``tests.support.aio_bridge``). Here is
what only asyncio has, each test in an event loop of its own (``asyncio.run``):

* many tasks calling at once, on one channel;
* a **cancelled task**: the call it awaits (unary, keep-alive, a watch being opened or read, a
  login) is cancelled and :class:`asyncio.CancelledError` propagates, untranslated, at every
  await point of a sequence of calls (``tests.support.aio_gates``);
* fail-over when an endpoint is unreachable or stops answering;
* one login shared by tasks, and a stale token replaced once;
* closing: calls in flight fail (as a :class:`~lessor.errors.LessorError`, not as a
  cancellation of their tasks), and no channel opens again.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import grpc
import pyetcd
import pytest

from lessor import LessorError, PermissionDenied
from lessor.etcd.aio_channels import AsyncChannels
from lessor.etcd.aio_client_transport import AsyncClientTransport
from lessor.etcd.aio_transport import AsyncTransport, RetryableRpc, WatchEvent
from lessor.etcd.connection import Stubs
from lessor.testing import FaultProxy, LocalEtcd
from tests.support.aio_gates import AFTER, BEFORE, GatedTransport, Gates, Point
from tests.support.fake_grpc import FakeRpcError, Reply

T = TypeVar("T")
TIMEOUT = 5.0  # per call: generous, for a loaded machine
LONG = 30.0  # a call's timeout that a test never waits out

MakeTransport = Callable[[str], AsyncTransport]


def _pyetcd(endpoint: str) -> Any:
    host, port = endpoint.rsplit(":", 1)
    return pyetcd.client(host=host, port=int(port), timeout=5)


@pytest.fixture(params=["channels", "client"])
def make_transport(request: pytest.FixtureRequest) -> Iterator[MakeTransport]:
    """``make(endpoint)``: an ``AsyncChannels``, or an ``AsyncClientTransport`` over a pyetcd
    client of its own, to ``endpoint``; the clients are closed at teardown."""
    clients: list[Any] = []

    def make(endpoint: str) -> AsyncTransport:
        if request.param == "channels":
            return AsyncChannels([endpoint])
        clients.append(_pyetcd(endpoint))
        return AsyncClientTransport(clients[-1])

    yield make
    for client in clients:
        client.close()


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``main()`` in an event loop of its own."""
    return asyncio.run(main())


Body = Callable[[Any], Coroutine[Any, Any, None]]


def run_with(transport: AsyncTransport, body: Body) -> None:
    """``body(transport)`` in an event loop of its own; the transport is closed after it."""

    async def main() -> None:
        try:
            await body(transport)
        finally:
            await transport.close()

    asyncio.run(main())


async def _put(transport: AsyncTransport, key: bytes, lease: int = 0) -> int:
    request = transport.rpc.PutRequest(key=key, value=b"v", lease=lease)
    return int((await transport.kv("Put", request, TIMEOUT, "t")).header.revision)


async def _range(transport: AsyncTransport, timeout: float = TIMEOUT) -> Any:
    return await transport.kv("Range", transport.rpc.RangeRequest(key=b"/"), timeout, "reading")


async def _cancelled(task: asyncio.Task[Any]) -> float:
    """Cancel ``task``, which must end cancelled; the seconds that took."""
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return time.monotonic() - started


# -- many tasks ----------------------------------------------------------------------------------


def test_many_tasks_call_at_once(
    make_transport: MakeTransport, etcd_server: LocalEtcd, prefix: str
) -> None:
    async def body(transport: Any) -> None:
        p = prefix.encode()
        revisions = await asyncio.gather(*(_put(transport, p + b"%d" % i) for i in range(100)))
        assert len(set(revisions)) == 100  # a write each
        request = transport.rpc.RangeRequest(key=p, range_end=p + b"\xff", count_only=True)
        assert (await transport.kv("Range", request, TIMEOUT, "t")).count == 100
        grant = await transport.lease("LeaseGrant", transport.rpc.LeaseGrantRequest(TTL=10),
                                      TIMEOUT, "t")  # fmt: skip
        ttls = await asyncio.gather(
            *(transport.keep_alive(grant.ID, TIMEOUT, "renewing") for _ in range(20))
        )
        assert ttls == [10] * 20

    run_with(make_transport(etcd_server.endpoint), body)


# -- cancellation --------------------------------------------------------------------------------

CALLS = ["kv", "lease", "keep_alive", "watch"]


def _call(transport: AsyncTransport, which: str, lease_id: int) -> Coroutine[Any, Any, Any]:
    """One call of each kind, with a timeout the tests never wait out."""
    rpc = transport.rpc
    if which == "kv":
        return transport.kv("Range", rpc.RangeRequest(key=b"/"), LONG, "reading")
    if which == "lease":
        return transport.lease("LeaseTimeToLive", rpc.LeaseTimeToLiveRequest(ID=lease_id), LONG,
                               "asking")  # fmt: skip
    if which == "keep_alive":
        return transport.keep_alive(lease_id, LONG, "renewing")
    return transport.watch(b"/k/", b"/k0", 0, LONG, "watching")


def _calls_open(endpoint: str) -> int:
    """How many calls (unary or streams) etcd serves now: started, less handled (its metrics)."""
    with urllib.request.urlopen(f"http://{endpoint}/metrics", timeout=5) as answer:
        text = answer.read().decode()

    def total(metric: str) -> int:
        pattern = rf'^grpc_server_{metric}_total{{[^}}]*grpc_service="etcdserverpb\.[^}}]*}} (\S+)$'
        return sum(int(float(v)) for v in re.findall(pattern, text, re.MULTILINE))

    return total("started") - total("handled")


@pytest.fixture(scope="module")
def quiet_etcd() -> Iterator[LocalEtcd]:
    """An etcd for this module's tests alone, whose metrics count only their calls."""
    with LocalEtcd() as server:
        yield server


@pytest.fixture
def proxy(quiet_etcd: LocalEtcd) -> Iterator[FaultProxy]:
    """A link to the module's etcd that a test can cut (``blackhole()``)."""
    with FaultProxy(quiet_etcd.endpoint) as link:
        yield link


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for a condition that only a poll can see (etcd's metrics), with a bound."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        await asyncio.sleep(0.05)


async def _serves_none(endpoint: str, what: str) -> None:
    """Wait until etcd serves no call (an earlier test's included), at most 10 s."""
    await _until(lambda: _calls_open(endpoint) == 0, 10, what)


@pytest.mark.parametrize("which", CALLS)
def test_a_cancelled_task_cancels_the_call_it_awaits(
    make_transport: MakeTransport, quiet_etcd: LocalEtcd, proxy: FaultProxy, which: str
) -> None:
    """Through a link that delivers nothing, a call never ends by itself: cancelling its task
    ends it at once, and the cancellation propagates as it is. Once the link delivers again,
    etcd serves no call of it (an open stream would stay)."""

    async def body(transport: Any) -> None:
        gates = Gates(hold_at=0)  # before the call
        gated = GatedTransport(transport, gates)
        await _serves_none(quiet_etcd.endpoint, "a quiet etcd")
        grant = await transport.lease(
            "LeaseGrant", transport.rpc.LeaseGrantRequest(TTL=10), TIMEOUT, "t"
        )  # fmt: skip  (connected)
        proxy.blackhole()
        task = asyncio.create_task(_call(gated, which, grant.ID))
        held = await gates.held(task)
        assert held is not None and held.call.startswith(which), held
        gates.release()
        await asyncio.sleep(0)  # one turn: the task goes on into its call, and waits
        assert not task.done()
        took = await _cancelled(task)
        assert took < 1.0, took
        assert [p.side for p in gates.passed] == [BEFORE]  # never came back from it
        proxy.heal()
        assert (await _range(transport)).header.revision > 0  # the transport is fine
        await _serves_none(quiet_etcd.endpoint, "no call open")

    run_with(make_transport(proxy.address), body)


def test_a_task_cancelled_while_it_reads_a_watch_ends_the_stream_at_etcd(
    make_transport: MakeTransport, quiet_etcd: LocalEtcd
) -> None:
    endpoint = quiet_etcd.endpoint

    async def body(transport: Any) -> None:
        await _serves_none(endpoint, "a quiet etcd")
        watch = await transport.watch(b"/k/", b"/k0", 0, TIMEOUT, "watching")
        assert _calls_open(endpoint) == 1

        async def read() -> list[WatchEvent]:
            return [event async for event in watch]

        task = asyncio.create_task(read())
        await _put(transport, b"/other")  # a round trip: the reader waits on its stream
        assert not task.done()
        assert await _cancelled(task) < 1.0
        assert watch.cancelled  # the watch is over with its reader
        await _serves_none(endpoint, "etcd ends the stream")

    run_with(make_transport(endpoint), body)


def test_a_cancelled_watch_ends_its_reading_without_an_error(
    make_transport: MakeTransport, etcd_server: LocalEtcd, prefix: str
) -> None:
    async def body(transport: Any) -> None:
        p = prefix.encode()
        start = await _put(transport, p + b"a")
        events = []
        async with await transport.watch(p, p + b"\xff", start, TIMEOUT, "t") as watch:
            async for event in watch:
                events.append(event)
                watch.cancel()  # the iteration ends: no error, nothing more
        assert events == [WatchEvent("PUT", p + b"a", start)]
        async with await transport.watch(p, p + b"\xff", start, TIMEOUT, "t") as watch:
            reader = asyncio.create_task(anext(watch))
            watch.cancel()
            with pytest.raises(StopAsyncIteration):
                await reader

    run_with(make_transport(etcd_server.endpoint), body)


def test_cancel_ends_a_watch_at_once_when_etcd_does_not_answer(
    make_transport: MakeTransport, quiet_etcd: LocalEtcd, proxy: FaultProxy
) -> None:
    """The stream is cancelled here, not ended by etcd (which hears nothing through a cut
    link); when the link delivers again, etcd serves no stream of it."""

    async def body(transport: Any) -> None:
        await _serves_none(quiet_etcd.endpoint, "a quiet etcd")
        watch = await transport.watch(b"/k/", b"/k0", 0, TIMEOUT, "watching")
        reader = asyncio.create_task(anext(watch))
        proxy.blackhole()
        await asyncio.sleep(0)  # one turn: the reader waits on its stream
        watch.cancel()
        async with asyncio.timeout(1.0):
            with pytest.raises(StopAsyncIteration):
                await reader
        proxy.heal()
        await _serves_none(quiet_etcd.endpoint, "no call open")

    run_with(make_transport(proxy.address), body)


def _sequence_points() -> list[Point]:
    """The points of :func:`_sequence`, in order: before and after each of its five calls."""
    calls = ["lease.LeaseGrant", "kv.Put", "keep_alive", "watch", "lease.LeaseRevoke"]
    return [Point(c, i, side) for i, c in enumerate(calls, 1) for side in (BEFORE, AFTER)]


async def _sequence(transport: AsyncTransport, key: bytes) -> None:
    """What an acquisition does, in short: grant, write, renew, watch, give back."""
    rpc = transport.rpc
    grant = await transport.lease("LeaseGrant", rpc.LeaseGrantRequest(TTL=10), TIMEOUT, "t")
    revision = await _put(transport, key, grant.ID)
    await transport.keep_alive(grant.ID, TIMEOUT, "renewing")
    async with await transport.watch(key, key + b"\x00", revision + 1, TIMEOUT, "t"):
        pass
    await transport.lease("LeaseRevoke", rpc.LeaseRevokeRequest(ID=grant.ID), TIMEOUT, "t")


def test_a_task_cancelled_at_every_await_point_ends_cancelled(
    make_transport: MakeTransport, etcd_server: LocalEtcd, prefix: str
) -> None:
    async def body(transport: Any) -> None:
        key = prefix.encode() + b"k"
        gates = Gates()
        await _sequence(GatedTransport(transport, gates), key)
        assert gates.passed == _sequence_points()
        for n, point in enumerate(gates.passed):
            held = Gates(hold_at=n)
            task = asyncio.create_task(_sequence(GatedTransport(transport, held), key))
            assert await held.held(task) == point
            await _cancelled(task)
            assert held.passed == gates.passed[: n + 1]
        await _range(transport)  # and the transport is fine

    run_with(make_transport(etcd_server.endpoint), body)


# -- fail-over -----------------------------------------------------------------------------------


def test_an_unreachable_endpoint_is_retryable_and_moves_calls_on(etcd_server: LocalEtcd) -> None:
    async def body(channels: Any) -> None:
        with pytest.raises(RetryableRpc, match=r"etcd 127\.0\.0\.1:9: UNAVAILABLE") as e:
            await _range(channels)
        assert e.value.endpoint == "127.0.0.1:9"
        assert e.value.code == grpc.StatusCode.UNAVAILABLE
        assert channels.endpoint == etcd_server.endpoint
        assert (await _range(channels)).header.revision > 0

    run_with(AsyncChannels(["127.0.0.1:9", *etcd_server.endpoints], endpoint_order="given"), body)


def test_an_endpoint_that_stops_answering_is_left_after_one_call_timeout(
    quiet_etcd: LocalEtcd, proxy: FaultProxy
) -> None:
    async def body(channels: Any) -> None:
        await _range(channels)  # connected through the proxy
        proxy.blackhole()
        started = time.monotonic()
        with pytest.raises(RetryableRpc) as e:
            await _range(channels, timeout=0.5)
        assert time.monotonic() - started < 2.0
        assert (e.value.endpoint, e.value.code) == (
            proxy.address, grpc.StatusCode.DEADLINE_EXCEEDED
        )  # fmt: skip
        assert channels.endpoint == quiet_etcd.endpoint
        assert (await _range(channels)).header.revision > 0

    run_with(AsyncChannels([proxy.address, quiet_etcd.endpoint], endpoint_order="given"), body)


# -- auth: one login for every task, a stale token replaced once (etcd's auth as fakes) ----------

OLD = "etcdserver: revision of auth store is old"


class AuthStore:
    """etcd's auth as a JWT token sees it, for tasks: a token is good only at the revision it
    was issued at. Logins are counted; a login waits for ``opened`` when one is given."""

    def __init__(self, stragglers: int = 1) -> None:
        self.revision = 1
        self.logins = 0
        self.opened: asyncio.Event | None = None
        self._stragglers = asyncio.Barrier(stragglers)

    async def Authenticate(self, request: Any, timeout: float) -> Any:
        self.logins += 1
        revision = self.revision
        if self.opened is not None:
            await self.opened.wait()
        await asyncio.sleep(0)  # a login is a raft write: the others pile up behind it
        return Reply(token=f"{request.name}@{revision}")

    async def Range(self, request: Any, timeout: float, metadata: Any) -> Any:
        token = dict(metadata)["token"]
        if token != f"app@{self.revision}":
            async with asyncio.timeout(5):
                await self._stragglers.wait()  # they find the token old together
            raise FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, OLD)
        return Reply(token=token)


def _fake_channels(store: Any) -> AsyncChannels:
    """AsyncChannels with a user, whose KV and Auth stubs are ``store`` on its endpoint."""
    channels = AsyncChannels(["127.0.0.1:2379"], user="app", password="apppw")

    def stubs(endpoint: str) -> Stubs:
        return Stubs(None, store, None, store, None)

    channels._stubs = stubs  # type: ignore[method-assign]
    return channels


def test_tasks_that_find_the_token_old_together_log_in_once() -> None:
    async def main() -> None:
        tasks = 8
        store = AuthStore(stragglers=tasks)
        channels = _fake_channels(store)
        assert (await channels.kv("Range", None, TIMEOUT, "reading")).token == "app@1"
        store.revision = 2  # an operator added a user: every token issued so far is old
        replies = await asyncio.gather(
            *(channels.kv("Range", None, TIMEOUT, "reading") for _ in range(tasks))
        )
        assert [r.token for r in replies] == ["app@2"] * tasks
        assert store.logins == 2  # one new login, shared by every task

    run(main)


@pytest.mark.parametrize(
    ("code", "details", "raised"),
    [
        # users or roles changed again between the login and the retry: the next attempt wins
        (grpc.StatusCode.INVALID_ARGUMENT, OLD, RetryableRpc),
        # a token refused as soon as it was issued will not do better next time
        (grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token", PermissionDenied),
    ],
)
def test_a_token_refused_again_after_a_new_login_is_not_retried_in_the_call(
    code: grpc.StatusCode, details: str, raised: type[Exception]
) -> None:
    class Refusing(AuthStore):
        async def Range(self, request: Any, timeout: float, metadata: Any) -> Any:
            raise FakeRpcError(code, details)

    async def main() -> None:
        refusing = Refusing()
        with pytest.raises(raised, match=details):
            await _fake_channels(refusing).kv("Range", None, TIMEOUT, "reading")
        assert refusing.logins == 2  # the first login, and one more

    run(main)


def test_a_task_cancelled_while_it_logs_in_leaves_the_login_to_the_next() -> None:
    async def main() -> None:
        store = AuthStore()
        store.opened = asyncio.Event()  # logins wait until the test opens them
        channels = _fake_channels(store)
        first = asyncio.create_task(channels.kv("Range", None, TIMEOUT, "reading"))
        second = asyncio.create_task(channels.kv("Range", None, 0.2, "reading"))
        await asyncio.sleep(0)  # one turn: the first logs in, the second waits for its login
        assert store.logins == 1
        # Waiting longer than its timeout for another task's login is retryable.
        with pytest.raises(RetryableRpc, match="another caller's login as 'app'"):
            await second
        await _cancelled(first)
        store.opened.set()
        assert (await channels.kv("Range", None, TIMEOUT, "reading")).token == "app@1"
        assert store.logins == 2  # the cancelled login released its turn

    run(main)


# -- closing -------------------------------------------------------------------------------------


def test_a_closed_transport_opens_no_channel() -> None:
    async def main() -> None:
        channels = AsyncChannels(["127.0.0.1:2379"])
        await channels.close()
        with pytest.raises(LessorError, match=r"127\.0\.0\.1:2379: the connection was closed"):
            await _range(channels)
        await channels.close()  # again: nothing to do

    run(main)


def test_closing_fails_the_calls_in_flight_but_does_not_cancel_their_tasks(
    proxy: FaultProxy,
) -> None:
    async def main() -> None:
        channels = AsyncChannels([proxy.address])
        watch = await channels.watch(b"/k/", b"/k0", 0, TIMEOUT, "watching")
        reader = asyncio.create_task(anext(watch))
        proxy.blackhole()
        call = asyncio.create_task(_range(channels, timeout=LONG))
        await asyncio.sleep(0)  # one turn: the call is made, and waits
        await channels.close()
        with pytest.raises(LessorError, match=f"reading: etcd {proxy.address} failed: CANC"):
            await call
        with pytest.raises(LessorError, match=f"watching: etcd {proxy.address} failed: CANC"):
            await reader
        assert watch.cancelled
        with pytest.raises(LessorError, match="the connection was closed"):
            await _range(channels)

    run(main)


def test_channels_serve_the_event_loop_of_their_first_call(etcd_server: LocalEtcd) -> None:
    channels = AsyncChannels(etcd_server.endpoints)
    run(lambda: _range(channels))
    with pytest.raises(RuntimeError, match="serve the event loop of their first call"):
        run(lambda: _range(channels))
    run(channels.close)


# -- a user's client -----------------------------------------------------------------------------


def test_a_users_client_must_be_a_pyetcd_or_etcd3_one() -> None:
    with pytest.raises(TypeError, match="pass a pyetcd or etcd3 client"):
        AsyncClientTransport(object())


class _Pending:
    """A threaded gRPC call that never ends by itself (a ``grpc.Future``'s part of it)."""

    def __init__(self) -> None:
        self.cancelled = False

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        pass  # never done, unless cancelled (a cancelled one is not read any more)

    def cancel(self) -> bool:
        self.cancelled = True
        return True


class _ClientOfPendingCalls:
    """A pyetcd-like client whose unary calls never end."""

    __module__ = "pyetcd.client"  # its generated messages are pyetcd's

    def __init__(self) -> None:
        self.calls: list[_Pending] = []
        self.host, self.port = "127.0.0.1", 2379

    def _start(self, *args: Any, **kwargs: Any) -> _Pending:
        self.calls.append(_Pending())
        return self.calls[-1]

    @property
    def kvstub(self) -> Any:
        return Reply(Range=Reply(future=self._start))

    leasestub = kvstub


def test_a_cancelled_task_cancels_its_call_through_a_users_client() -> None:
    async def main() -> None:
        client = _ClientOfPendingCalls()
        task = asyncio.create_task(_range(AsyncClientTransport(client), timeout=LONG))
        await asyncio.sleep(0)  # one turn: the call is made, and waits
        assert [call.cancelled for call in client.calls] == [False]
        await _cancelled(task)
        assert [call.cancelled for call in client.calls] == [True]

    run(main)


def test_a_users_client_stays_open_after_the_transport_closes(etcd_server: LocalEtcd) -> None:
    client = _pyetcd(etcd_server.endpoint)
    try:

        async def main() -> None:
            transport = AsyncClientTransport(client)
            assert transport.endpoints == [etcd_server.endpoint]
            await _put(transport, b"/users-client")
            await transport.close()

        run(main)
        value, _ = client.get("/users-client")
        assert value == b"v"
    finally:
        client.close()
