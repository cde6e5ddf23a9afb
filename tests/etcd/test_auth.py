"""Auth tokens that go stale, and what etcd's RESOURCE_EXHAUSTED means.

etcd refuses a token issued before any change to its users, roles or permissions ("revision
of auth store is old"); a JWT token carries that revision, so one operator's ``user add``
makes every lessor's token old at once. The lessor must log in again and carry on, as etcd's
Go client does, without every thread of a process logging in.

RESOURCE_EXHAUSTED is three things: a full database (permanent until an operator acts), an
overloaded member (passing: try another), and a message over a gRPC size limit (neither).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from lessor import LessorError, Partition, PermissionDenied, Unavailable
from lessor.etcd import EtcdLessor
from lessor.etcd.channels import Channels
from lessor.etcd.rpc_errors import RetryableRpc, translate
from lessor.observe import Observer, add_observer, remove_observer
from lessor.testing import LocalEtcd
from tests.support.etcd_admin import add_user
from tests.support.fake_grpc import FakeRpcError, Reply

P = Partition


# -- pure logic: translate, and Channels against fake stubs -----------------------------------


EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_full_database_is_out_of_space() -> None:
    error = FakeRpcError(EXHAUSTED, "etcdserver: mvcc: database space exceeded")
    e = translate(error, "e1:2379", "section 's'")
    assert isinstance(e, Unavailable)
    assert "out of space" in str(e) and "NOSPACE" in str(e) and "e1:2379" in str(e)


def test_too_many_requests_is_retryable() -> None:
    e = translate(FakeRpcError(EXHAUSTED, "etcdserver: too many requests"), "e1:2379", "s")
    assert isinstance(e, RetryableRpc)
    assert e.code == EXHAUSTED and e.endpoint == "e1:2379"


@pytest.mark.parametrize(
    ("details", "names"),
    [
        # Measured on grpcio 1.85 against etcd 3.5.16: an answer over our receive limit, a
        # request over etcd's, and a request over a send limit of ours.
        ("Stream removed (CLIENT: Received message larger than max (5043 vs. 1000))",
         ["5043 bytes", "1000 bytes", "grpc.max_receive_message_length"]),
        ("grpc: received message larger than max (3145736 vs. 2097152)",
         ["3145736 bytes", "2097152 bytes", "--max-request-bytes"]),
        ("CLIENT: Sent message larger than max (5006 vs. 1000)",
         ["5006 bytes", "1000 bytes", "grpc.max_send_message_length"]),
    ],
)  # fmt: skip
def test_a_message_over_a_size_limit_names_the_limit(details: str, names: list[str]) -> None:
    e = translate(FakeRpcError(EXHAUSTED, details), "e1:2379", "section 's'")
    assert type(e) is LessorError  # neither out of space (Unavailable) nor retryable
    for name in [*names, "e1:2379", "section 's'"]:
        assert name in str(e)


def test_an_old_token_from_a_users_own_client_is_permission_denied() -> None:
    """ClientTransport cannot log in again for the user's client: say what to do."""
    error = FakeRpcError(
        grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: revision of auth store is old"
    )
    e = translate(error, "e1:2379", "s")
    assert isinstance(e, PermissionDenied)
    assert "log in again" in str(e)


def _fake_channels(kv: Any, auth: Any = None, endpoints: int = 1) -> Channels:
    """Channels whose stubs are ``kv`` and ``auth`` on every endpoint."""
    channels = Channels(
        [f"127.0.0.1:{2379 + i}" for i in range(endpoints)],
        endpoint_order="given",
        user="app" if auth is not None else None,
        password="apppw" if auth is not None else None,
    )

    def stubs(endpoint: str) -> tuple[Any, Any, Any, Any]:
        return None, kv, None, auth

    channels._stubs = stubs  # type: ignore[method-assign]
    return channels


def test_too_many_requests_moves_to_the_next_member() -> None:
    class OverloadedKV:
        def Range(self, request: Any, timeout: float, metadata: Any) -> Any:
            raise FakeRpcError(EXHAUSTED, "etcdserver: too many requests")

    channels = _fake_channels(OverloadedKV(), endpoints=2)
    with pytest.raises(RetryableRpc, match="too many requests"):
        channels.kv("Range", None, 1.0, "reading")
    assert channels.endpoint == "127.0.0.1:2380"


class FakeAuthStore:
    """etcd's auth as a JWT token sees it: a token is good only at the revision it was issued
    at. Logins are counted; the first ``stragglers`` calls with an old token are held until
    all of them have arrived, so that they find the token stale together."""

    def __init__(self, stragglers: int) -> None:
        self.revision = 1
        self.logins = 0
        self._lock = threading.Lock()
        self._stragglers = threading.Barrier(stragglers)

    def Authenticate(self, request: Any, timeout: float) -> Any:
        with self._lock:
            self.logins += 1
            revision = self.revision
        time.sleep(0.05)  # a login is a raft write: give the others time to pile up behind it
        return Reply(token=f"{request.name}@{revision}")

    def Range(self, request: Any, timeout: float, metadata: Any) -> Any:
        token = dict(metadata)["token"]
        if token != f"app@{self.revision}":
            with contextlib.suppress(threading.BrokenBarrierError):
                self._stragglers.wait(timeout=5)
            raise FakeRpcError(
                grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: revision of auth store is old"
            )
        return Reply(token=token)


def test_threads_that_find_the_token_old_together_log_in_once() -> None:
    threads = 8
    store = FakeAuthStore(stragglers=threads)
    channels = _fake_channels(store, auth=store)
    assert channels.kv("Range", None, 5.0, "reading").token == "app@1"
    assert store.logins == 1
    store.revision = 2  # an operator added a user: every token issued so far is old

    results: list[object] = []

    def read() -> None:
        try:
            results.append(channels.kv("Range", None, 5.0, "reading").token)
        except Exception as e:  # collected: the assertion below shows it
            results.append(e)

    workers = [threading.Thread(target=read) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=30)
    assert results == ["app@2"] * threads
    assert store.logins == 2  # one new login, shared by every thread


@pytest.mark.parametrize(
    ("code", "details", "raised"),
    [
        # users or roles changed again between the login and the retry: the next attempt wins
        (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: revision of auth store is old",
         RetryableRpc),
        # a token refused as soon as it was issued will not do better next time
        (grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token", PermissionDenied),
    ],
)  # fmt: skip
def test_a_token_refused_again_after_a_new_login_is_not_retried_in_the_call(
    code: grpc.StatusCode, details: str, raised: type[Exception]
) -> None:
    class Refusing:
        logins = 0

        def Authenticate(self, request: Any, timeout: float) -> Any:
            self.logins += 1
            return Reply(token=f"t{self.logins}")

        def Range(self, request: Any, timeout: float, metadata: Any) -> Any:
            raise FakeRpcError(code, details)

    refusing = Refusing()
    with pytest.raises(raised, match=details):
        _fake_channels(refusing, auth=refusing).kv("Range", None, 1.0, "reading")
    assert refusing.logins == 2  # the first login, and one more


def test_no_repr_of_the_transport_shows_the_password_or_the_token() -> None:
    store = FakeAuthStore(stragglers=1)
    channels = _fake_channels(store, auth=store)
    assert channels.kv("Range", None, 5.0, "reading").token == "app@1"  # it logged in
    for shown in (repr(channels), str(channels)):
        assert "apppw" not in shown and "app@1" not in shown


# -- a real etcd with auth on (the auth_etcd fixture of conftest.py) ----------------------------


class _ReleaseFailures(Observer):
    def __init__(self) -> None:
        self.errors: list[BaseException] = []

    def release_failed(self, backend: str, section_id: str, error: BaseException) -> None:
        self.errors.append(error)


@pytest.fixture
def release_failures() -> Iterator[list[BaseException]]:
    observer = _ReleaseFailures()
    add_observer(observer)
    try:
        yield observer.errors
    finally:
        remove_observer(observer)


def test_after_an_auth_change_the_next_acquisition_and_release_succeed_at_once(
    auth_etcd: LocalEtcd,
    release_failures: list[BaseException],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="lessor"),
        EtcdLessor(auth_etcd.endpoints, user="app", password="apppw", prefix="/allowed/",
                   acquire_timeout=10.0) as it,
    ):  # fmt: skip
        with it.lease("s", P(0, 10), 30) as lease:
            assert lease.partitions == [P(0, 10)]
        add_user(auth_etcd, "reporting")

        started = time.monotonic()
        with it.lease("s", P(0, 10), 30) as lease:  # the first call after the change
            assert lease.partitions == [P(0, 10)]
            add_user(auth_etcd, "billing")
        # the release was the first call after the second change
        assert time.monotonic() - started < 3.0  # at once: not retried until the token expires

        with it.lease("s", P(0, 10), 30) as lease:
            assert lease.partitions == [P(0, 10)]  # the release freed the range
    assert release_failures == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_threads_carry_on_after_an_auth_change(auth_etcd: LocalEtcd) -> None:
    with EtcdLessor(auth_etcd.endpoints, user="app", password="apppw", prefix="/allowed/",
                    acquire_timeout=10.0) as it:  # fmt: skip
        with it.lease("warm-up", P(0, 10), 30):
            pass
        add_user(auth_etcd, "reporting")
        results: list[object] = []
        start = threading.Barrier(6)

        def acquire(section: str) -> None:
            try:
                start.wait(timeout=10)
                with it.lease(section, P(0, 10), 30) as lease:
                    results.append(lease.partitions)
            except Exception as e:  # collected: the assertion below shows it
                results.append(e)

        workers = [threading.Thread(target=acquire, args=(f"s{i}",)) for i in range(6)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=30)
        assert results == [[P(0, 10)]] * 6


def test_no_repr_error_or_log_line_shows_the_password_or_the_token(
    auth_etcd: LocalEtcd, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.DEBUG, logger="lessor"),
        EtcdLessor(auth_etcd.endpoints, user="app", password="apppw", prefix="/allowed/") as it,
        it.lease("s", P(0, 10), 30) as lease,
    ):
        token = it._transport._token  # type: ignore[attr-defined]
        assert token  # it logged in
        shown = [repr(it), str(it), repr(it._transport), str(it._transport), repr(lease),
                 repr(lease.ctx)]  # fmt: skip
    wrong_password = "not-the-pw-4711"
    with (
        EtcdLessor(auth_etcd.endpoints, user="app", password=wrong_password) as wrong,
        pytest.raises(PermissionDenied) as e,
    ):
        wrong.lease("s", P(0, 10), 5).__enter__()
    shown += [str(e.value), repr(e.value), *(r.getMessage() for r in caplog.records)]
    for text in shown:
        assert "apppw" not in text and token not in text and wrong_password not in text


def test_the_command_line_never_prints_the_password(auth_etcd: LocalEtcd) -> None:
    env = {**os.environ, "LESSOR_ETCD_ENDPOINTS": auth_etcd.endpoint,
           "LESSOR_ETCD_PREFIX": "/allowed/", "LESSOR_ETCD_USER": "app"}  # fmt: skip
    for password, returncode in (("apppw", 0), ("not-the-pw-4711", 1)):
        done = subprocess.run([sys.executable, "-m", "lessor", "inspect"], capture_output=True,
                              text=True, timeout=60, check=False,
                              env={**env, "LESSOR_ETCD_PASSWORD": password})  # fmt: skip
        assert done.returncode == returncode, done.stderr
        assert password not in done.stdout + done.stderr
