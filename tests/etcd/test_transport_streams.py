"""The transports' streaming calls against a real etcd: ``keep_alive`` and ``watch``.

``keep_alive`` is one ``LeaseKeepAlive`` round trip; ``watch`` a stream that another thread can
cancel. Both are made by our own channels (``Channels``) and through a user's client
(``ClientTransport``), and fail as unary calls do: translated, retryable or not, with a stale
auth token replaced by a new login.

The asyncio transports (``AsyncChannels``, ``AsyncClientTransport``) must behave the same: each
test runs against them too, called from threads through ``tests.support.aio_bridge``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import grpc
import pyetcd
import pytest

from lessor import PermissionDenied
from lessor.context import Context
from lessor.etcd.aio_channels import AsyncChannels
from lessor.etcd.aio_client_transport import AsyncClientTransport
from lessor.etcd.channels import Channels
from lessor.etcd.client_transport import ClientTransport
from lessor.etcd.stream_messages import Refused
from lessor.etcd.transport import (
    Compacted,
    LeaseNotFound,
    RetryableRpc,
    Transport,
    Watch,
    WatchEvent,
)
from lessor.testing import FaultProxy, LocalEtcd
from tests.support.aio_bridge import KINDS, Blocking, our_channels
from tests.support.etcd_admin import add_user

TIMEOUT = 5.0  # per call: generous, for a loaded machine


class MakeChannels(Protocol):
    def __call__(self, endpoints: list[str], **options: Any) -> Transport: ...


@pytest.fixture(params=KINDS)
def channels_of(request: pytest.FixtureRequest) -> Iterator[MakeChannels]:
    """``make(endpoints, **options)``: our own channels (``Channels``, or ``AsyncChannels``
    called through ``Blocking``) with ``Channels``' options; all are closed at teardown."""
    made: list[Transport] = []

    def make(endpoints: list[str], **options: Any) -> Transport:
        made.append(our_channels(request.param, endpoints, **options))
        return made[-1]

    yield make
    for channels in made:
        channels.close()


def _token(channels: Transport) -> str | None:
    """The token our own channels logged in for (a private detail, for the tests only)."""
    if isinstance(channels, Blocking):
        return channels.inner._token  # type: ignore[attr-defined, no-any-return]
    return channels._token  # type: ignore[attr-defined, no-any-return]


@pytest.fixture(params=["channels", "client", "aio-channels", "aio-client"])
def transport(request: pytest.FixtureRequest, etcd_server: LocalEtcd) -> Iterator[Transport]:
    """Our own channels, or a user's pyetcd client, to the session's etcd; threaded, or
    asyncio called through ``Blocking``."""
    host, port = etcd_server.endpoint.rsplit(":", 1)
    client = pyetcd.client(host=host, port=int(port), timeout=5)
    made: Transport = {
        "channels": lambda: Channels(etcd_server.endpoints),
        "client": lambda: ClientTransport(client),
        "aio-channels": lambda: Blocking(AsyncChannels(etcd_server.endpoints)),
        "aio-client": lambda: Blocking(AsyncClientTransport(client)),
    }[request.param]()
    # A first call: grpc.aio's poller thread then runs before any test counts threads.
    made.kv("Range", made.rpc.RangeRequest(key=b"/"), TIMEOUT, "warming up")
    yield made
    made.close()
    client.close()


def _grant(transport: Transport, ttl: int) -> int:
    response = transport.lease("LeaseGrant", transport.rpc.LeaseGrantRequest(TTL=ttl), 5, "t")
    return int(response.ID)


def _remaining(transport: Transport, lease_id: int) -> int:
    """What etcd says is left of the lease, in whole seconds (it truncates)."""
    request = transport.rpc.LeaseTimeToLiveRequest(ID=lease_id)
    return int(transport.lease("LeaseTimeToLive", request, TIMEOUT, "t").TTL)


def _put(transport: Transport, key: bytes) -> int:
    request = transport.rpc.PutRequest(key=key, value=b"v")
    return int(transport.kv("Put", request, TIMEOUT, "t").header.revision)


def _delete(transport: Transport, key: bytes) -> int:
    request = transport.rpc.DeleteRangeRequest(key=key)
    return int(transport.kv("DeleteRange", request, TIMEOUT, "t").header.revision)


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for a condition that only a poll can see (etcd's lease clock), with a bound."""
    ctx = Context.background().with_timeout(timeout)
    while not condition():
        assert not ctx.wait(0.05), f"{what}: not within {timeout}s"


def _events(watch: Watch) -> queue.Queue[WatchEvent | BaseException | None]:
    """Iterate ``watch`` in a thread: its events, then None (ended) or what it raised."""
    out: queue.Queue[WatchEvent | BaseException | None] = queue.Queue()

    def run() -> None:
        try:
            for event in watch:
                out.put(event)
            out.put(None)
        except BaseException as e:  # handed to the test
            out.put(e)

    threading.Thread(target=run, name="test watch reader", daemon=True).start()
    return out


# -- keep_alive ----------------------------------------------------------------------------------


def test_keep_alive_returns_the_ttl_and_extends_the_lease(transport: Transport) -> None:
    lease_id = _grant(transport, 10)
    try:
        # Let etcd's clock run a little: the lease has visibly less than its TTL left.
        _wait_until(lambda: _remaining(transport, lease_id) <= 8, 10, "the lease's countdown")
        assert transport.keep_alive(lease_id, TIMEOUT, "renewing") == 10
        assert _remaining(transport, lease_id) >= 9  # its countdown started again
    finally:
        transport.lease("LeaseRevoke", transport.rpc.LeaseRevokeRequest(ID=lease_id), 5, "t")


def test_keep_alive_of_a_revoked_lease_is_lease_not_found(transport: Transport) -> None:
    lease_id = _grant(transport, 10)
    transport.lease("LeaseRevoke", transport.rpc.LeaseRevokeRequest(ID=lease_id), 5, "t")
    with pytest.raises(LeaseNotFound, match=f"{lease_id:x}") as e:
        transport.keep_alive(lease_id, TIMEOUT, "renewing")
    assert "renewing" in str(e.value)


def test_keep_alive_of_an_unreachable_endpoint_is_retryable_and_moves_on(
    channels_of: MakeChannels,
) -> None:
    with LocalEtcd() as server:
        # A port that refuses, then the real etcd: the failure moves calls to the next one.
        channels = channels_of(["127.0.0.1:9", *server.endpoints], endpoint_order="given")
        lease_id = _grant(channels_of(server.endpoints), 10)
        with pytest.raises(RetryableRpc):
            channels.keep_alive(lease_id, TIMEOUT, "renewing")
        assert channels.endpoint == server.endpoint
        assert channels.keep_alive(lease_id, TIMEOUT, "renewing") == 10


# -- watch ---------------------------------------------------------------------------------------


def test_watch_delivers_delete_events(transport: Transport, prefix: str) -> None:
    p = prefix.encode()
    start = _put(transport, p + b"a")
    _put(transport, p + b"b")
    with (
        transport.watch(p, p + b"\xff", start + 1, TIMEOUT, "t", no_put=True) as deletions,
        transport.watch(p, p + b"\xff", start + 1, TIMEOUT, "t") as everything,
    ):
        deleted = _delete(transport, p + b"a")
        gone, seen = _events(deletions), _events(everything)
        assert seen.get(timeout=TIMEOUT) == WatchEvent("PUT", p + b"b", start + 1)
        assert seen.get(timeout=TIMEOUT) == WatchEvent("DELETE", p + b"a", deleted)
        # NOPUT: the put of b, which came first, is not an event
        event = gone.get(timeout=TIMEOUT)
        assert event == WatchEvent("DELETE", p + b"a", deleted)
        assert isinstance(event, WatchEvent) and event.deleted


def test_a_lease_that_expires_deletes_its_keys_as_events(transport: Transport, prefix: str) -> None:
    p = prefix.encode()
    lease_id = _grant(transport, 1)
    request = transport.rpc.PutRequest(key=p + b"m", value=b"v", lease=lease_id)
    put = int(transport.kv("Put", request, TIMEOUT, "t").header.revision)
    with transport.watch(p, p + b"\xff", put + 1, TIMEOUT, "t", no_put=True) as watch:
        events = _events(watch)
        event = events.get(timeout=10)  # etcd's minimum TTL here is 1 s, its checker 0.5 s
        assert isinstance(event, WatchEvent)
        assert (event.kind, event.key) == ("DELETE", p + b"m")


def test_a_compacted_start_revision_raises_compacted(transport: Transport, prefix: str) -> None:
    p = prefix.encode()
    first = _put(transport, p + b"a")
    last = _put(transport, p + b"a")
    transport.kv("Compact", transport.rpc.CompactionRequest(revision=last), TIMEOUT, "t")
    watch = transport.watch(p, p + b"\xff", first, TIMEOUT, "t")
    with pytest.raises(Compacted) as e:
        list(watch)
    assert e.value.revision == last
    assert watch.cancelled  # a failed watch is over: its stream is cancelled


def test_cancel_from_another_thread_ends_the_iteration_promptly(
    transport: Transport, prefix: str
) -> None:
    p = prefix.encode()
    before = set(threading.enumerate())
    watch = transport.watch(p, p + b"\xff", 0, TIMEOUT, "t")
    events = _events(watch)
    with pytest.raises(queue.Empty):
        events.get(timeout=0.2)  # nothing happens under the prefix: it waits
    cancelled = time.monotonic()
    watch.cancel()
    assert events.get(timeout=2) is None  # ended without an error
    took = time.monotonic() - cancelled
    assert took < 1.0, took
    # gRPC's threads for the stream (its request sender, its channel's poller) end too.
    for thread in set(threading.enumerate()) - before:
        thread.join(timeout=5)
        assert not thread.is_alive(), thread
    print(f"\nwatch iteration ended {took * 1e3:.1f} ms after cancel()")


def test_a_killed_member_breaks_the_watch_as_retryable(channels_of: MakeChannels) -> None:
    with LocalEtcd() as server:
        channels = channels_of(server.endpoints)
        watch = channels.watch(b"/k/", b"/k0", 0, TIMEOUT, "t")
        events = _events(watch)
        server.kill()
        broke = events.get(timeout=20)  # gRPC sees the connection close
        assert isinstance(broke, RetryableRpc), broke
        assert server.endpoint in str(broke)
        assert watch.cancelled


def test_a_watch_to_nowhere_is_retryable_within_its_timeout(channels_of: MakeChannels) -> None:
    channels = channels_of(["127.0.0.1:9"])
    started = time.monotonic()
    with pytest.raises(RetryableRpc):
        channels.watch(b"/k/", b"/k0", 0, 1.0, "t")
    assert time.monotonic() - started < 3.0


def test_a_watch_etcd_does_not_confirm_in_time_is_retryable(
    channels_of: MakeChannels, etcd_server: LocalEtcd
) -> None:
    with FaultProxy(etcd_server.endpoint) as proxy:
        channels = channels_of([proxy.address])
        _put(channels, b"/warm")  # connected through the proxy
        proxy.blackhole()  # the watch is sent, and never answered
        started = time.monotonic()
        with pytest.raises(RetryableRpc, match=r"no answer to a watch in 0\.500s"):
            channels.watch(b"/k/", b"/k0", 0, 0.5, "t")
        assert time.monotonic() - started < 2.0


# -- auth ----------------------------------------------------------------------------------------


def test_streams_through_an_etcd_with_auth(auth_etcd: LocalEtcd, channels_of: MakeChannels) -> None:
    channels = channels_of(auth_etcd.endpoints, user="app", password="apppw")
    lease_id = _grant(channels, 10)
    assert channels.keep_alive(lease_id, TIMEOUT, "renewing") == 10
    start = _put(channels, b"/allowed/a")
    with channels.watch(b"/allowed/", b"/allowed0", start + 1, TIMEOUT, "t") as watch:
        deleted = _delete(channels, b"/allowed/a")
        assert _events(watch).get(timeout=TIMEOUT) == WatchEvent("DELETE", b"/allowed/a", deleted)
    # An operator changes the users: a JWT token issued before is old. The watch logs in
    # again and is made again, once, as a unary call is.
    token = _token(channels)
    add_user(auth_etcd, "reporting")
    with channels.watch(b"/allowed/", b"/allowed0", 0, TIMEOUT, "t"):
        pass
    assert channels.keep_alive(lease_id, TIMEOUT, "renewing") == 10
    if "--auth-token" in auth_etcd.extra_args:
        assert _token(channels) != token
    with pytest.raises(PermissionDenied, match="permission denied"):
        channels.watch(b"/lessor/", b"/lessor0", 0, TIMEOUT, "watching")


def test_a_watch_with_a_wrong_password_is_permission_denied(
    auth_etcd: LocalEtcd, channels_of: MakeChannels
) -> None:
    channels = channels_of(auth_etcd.endpoints, user="app", password="wrong")
    with pytest.raises(PermissionDenied, match="app"):
        channels.watch(b"/allowed/", b"/allowed0", 0, TIMEOUT, "t")


# -- what a cancelled watch's reason means ---------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "code", "details"),
    [
        # etcd 3.5.16's own reasons, as measured
        ("rpc error: code = PermissionDenied desc = etcdserver: permission denied",
         grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied"),
        ("rpc error: code = Unauthenticated desc = etcdserver: invalid auth token",
         grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token"),
        ("rpc error: code = InvalidArgument desc = etcdserver: revision of auth store is old",
         grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: revision of auth store is old"),
        ("rpc error: code = Unavailable desc = etcdserver: no leader",
         grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader"),
        ("mvcc: something new", grpc.StatusCode.UNKNOWN, "mvcc: something new"),
        ("rpc error: code = Bogus desc = x", grpc.StatusCode.UNKNOWN, "x"),
    ],
)  # fmt: skip
def test_a_cancel_reason_is_read_as_a_status(
    reason: str, code: grpc.StatusCode, details: str
) -> None:
    refused = Refused.of_reason(reason)
    assert (refused.code(), refused.details()) == (code, details)
