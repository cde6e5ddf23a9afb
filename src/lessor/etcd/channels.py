"""Our own gRPC channels to etcd: a :class:`~lessor.etcd.transport.Transport` over a list of
endpoints, with fail-over rotation and auth login.

* **One endpoint at a time.** Every call, unary or streaming, goes to the current endpoint
  (:meth:`Channels._on_current_endpoint`). A call that finds it unreachable or overloaded
  (:func:`~lessor.etcd.rpc_errors.retryable`) moves later calls to the following endpoint and
  raises :class:`~lessor.etcd.rpc_errors.RetryableRpc`: the caller's retry loop decides whether
  to try again. The first endpoint is a random one, or the first given.
* **Auth.** With a user and password, calls carry a token from one login shared by every
  thread. A call whose token etcd refuses as expired, or as issued before the last change to
  users and roles (:func:`~lessor.etcd.rpc_errors.stale_token`), logs in again, once, and is
  made again, as etcd's Go client does.
* **Channels.** One per endpoint, opened at its first call, with short reconnect back-offs and
  keep-alive pings; :meth:`Channels.close` closes them, and a closed ``Channels`` never opens
  one again (a late clean-up fails instead).
"""

from __future__ import annotations

import importlib
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from lessor.errors import LessorError
from lessor.etcd.rpc_errors import (
    AUTH_OLD_REVISION,
    RetryableRpc,
    retryable,
    stale_token,
    status_of,
    translate,
)
from lessor.etcd.streams import (
    Compacted,
    CompactedAtStart,
    Metadata,
    Watch,
    keep_alive_once,
    keep_alive_request,
    open_watch,
    renewed_ttl,
    watch_request,
)
from lessor.etcd.transport import parse_endpoint

__all__ = ["Channels", "TLSConfig"]

T = TypeVar("T")

# gRPC reconnects after a refused connection with a 1 s initial back-off by default; etcd
# members restart faster than that, and a lease deadline is often only seconds long.
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    # Notice a dead or cut-off member on an idle channel too. etcd refuses pings more often
    # than every 5 s (--grpc-keepalive-min-time).
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 3_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """Files for TLS to etcd: the CA to trust, and optionally a client certificate and key."""

    ca_cert: str | None = None
    cert_cert: str | None = None
    cert_key: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert_cert is None) != (self.cert_key is None):
            raise ValueError("TLS client certificate and key must be given together")

        def read(path: str | None) -> bytes | None:
            if path is None:
                return None
            try:
                with open(path, "rb") as f:
                    return f.read()
            except OSError as e:
                raise ValueError(f"cannot read TLS file {path!r}: {e}") from None

        return grpc.ssl_channel_credentials(
            read(self.ca_cert), read(self.cert_key), read(self.cert_cert)
        )


class Channels:
    """gRPC channels to a list of endpoints; calls go to one, and move on when it fails."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        tls: TLSConfig | None = None,
        user: str | None = None,
        password: str | None = None,
        connect_timeout: float = 5.0,
        endpoint_order: str = "random",
    ) -> None:
        if isinstance(endpoints, str):
            raise TypeError("endpoints must be a list of 'host:port' strs, not one str")
        self._endpoints = [parse_endpoint(e) for e in endpoints]
        if not self._endpoints:
            raise ValueError("at least one etcd endpoint is required")
        if (user is None) != (password is None):
            raise ValueError("etcd user and password must be given together")
        self.rpc = importlib.import_module("pyetcd.etcdrpc")
        self._credentials = tls.credentials() if tls is not None else None
        self._user, self._password = user, password
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        if endpoint_order not in ("random", "given"):
            raise ValueError(f"endpoint_order must be 'random' or 'given', got {endpoint_order!r}")
        # "random": a cluster's clients spread over its members instead of all starting on
        # the first; "given": start on the first (e.g. the member in the caller's datacenter).
        self._index = random.randrange(len(self._endpoints)) if endpoint_order == "random" else 0
        self._channels: dict[str, tuple[grpc.Channel, Any, Any, Any, Any]] = {}
        self._closed = False
        self._token: str | None = None
        # One login at a time: threads that find the token stale together wait for the first
        # one's login and share its token, rather than each logging in (a raft write each).
        self._login_lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return self._endpoints[self._index]

    @property
    def endpoints(self) -> list[str]:
        return list(self._endpoints)

    def _stubs(self, endpoint: str) -> tuple[grpc.Channel, Any, Any, Any, Any]:
        with self._lock:
            found = self._channels.get(endpoint)
            if found is None:
                if self._closed:  # a late clean-up must not open a channel nobody closes
                    raise LessorError(f"etcd {endpoint}: the connection was closed")
                if self._credentials is not None:
                    channel = grpc.secure_channel(endpoint, self._credentials, _CHANNEL_OPTIONS)
                else:
                    channel = grpc.insecure_channel(endpoint, _CHANNEL_OPTIONS)
                found = (
                    channel,
                    self.rpc.KVStub(channel),
                    self.rpc.LeaseStub(channel),
                    self.rpc.AuthStub(channel),
                    self.rpc.WatchStub(channel),
                )
                self._channels[endpoint] = found
            return found

    def _token_for(self, endpoint: str, timeout: float, stale: str | None = None) -> str:
        """The auth token to send: the current one, or a new login's if there is none yet
        or it is still ``stale`` (another thread may have replaced it in the meantime)."""
        with self._lock:
            token = self._token
        if token is not None and token != stale:
            return token
        if not self._login_lock.acquire(timeout=timeout):
            raise RetryableRpc(
                endpoint,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"waited {timeout}s for another thread's login as {self._user!r}",
            )
        try:
            with self._lock:
                token = self._token
            if token is not None and token != stale:
                return token  # another thread logged in while this one waited for it
            auth = self._stubs(endpoint)[3]
            request = self.rpc.AuthenticateRequest(name=self._user, password=self._password)
            try:
                token = str(auth.Authenticate(request, timeout=timeout).token)
            except grpc.RpcError as e:
                if retryable(*status_of(e)):
                    self._rotate(endpoint)  # or every retry would log in at the same member
                raise translate(e, endpoint, f"authenticating as {self._user!r}") from None
            with self._lock:
                self._token = token
            return token
        finally:
            self._login_lock.release()

    def _on_current_endpoint(
        self,
        which: int,
        invoke: Callable[[Any, Metadata | None], T],
        timeout: float,
        what: str,
    ) -> tuple[T, str]:
        """A call on the current endpoint, made once: ``invoke(stub, metadata)``, the
        stub being ``_stubs(endpoint)[which]``; its result, and the endpoint it went to.

        Every call, unary or streaming, goes through here: a stale token logs in again once
        and the call is made again; a retryable failure moves later calls to the next
        endpoint; every failure leaves translated.
        """
        endpoint = self.endpoint
        stub = self._stubs(endpoint)[which]
        token = self._token_for(endpoint, timeout) if self._user is not None else None
        refreshed = False
        while True:
            metadata = (("token", token),) if token is not None else None
            try:
                return invoke(stub, metadata), endpoint
            except grpc.RpcError as e:
                code, details = status_of(e)
                if token is not None and stale_token(code, details):
                    if not refreshed:  # log in again, once, and retry (see stale_token)
                        refreshed = True
                        token = self._token_for(endpoint, timeout, stale=token)
                        continue
                    if AUTH_OLD_REVISION in details:
                        # Users or roles changed again since the login: a passing race, and
                        # the next attempt logs in anew.
                        raise RetryableRpc(endpoint, code, details) from None
                raise self._failed(e, endpoint, what) from None

    def _failed(self, err: grpc.RpcError, endpoint: str, what: str) -> Exception:
        """What a failure on ``endpoint`` becomes; a retryable one moves later calls on."""
        if retryable(*status_of(err)):
            self._rotate(endpoint)
        return translate(err, endpoint, what)

    def _call(self, which: int, method: str, request: Any, timeout: float, what: str) -> Any:
        def invoke(stub: Any, metadata: Metadata | None) -> Any:
            return getattr(stub, method)(request, timeout=timeout, metadata=metadata)

        return self._on_current_endpoint(which, invoke, timeout, what)[0]

    def _rotate(self, failed: str) -> None:
        with self._lock:
            if self._endpoints[self._index] == failed and len(self._endpoints) > 1:
                self._index = (self._index + 1) % len(self._endpoints)

    def kv(self, method: str, request: Any, timeout: float, what: str) -> Any:
        return self._call(1, method, request, timeout, what)

    def lease(self, method: str, request: Any, timeout: float, what: str) -> Any:
        return self._call(2, method, request, timeout, what)

    def keep_alive(self, lease_id: int, timeout: float, what: str) -> int:
        request = keep_alive_request(self.rpc, lease_id)

        def invoke(stub: Any, metadata: Metadata | None) -> Any:
            return keep_alive_once(stub.LeaseKeepAlive, request, timeout, metadata)

        response, endpoint = self._on_current_endpoint(2, invoke, timeout, what)
        return renewed_ttl(response, endpoint, lease_id, what)

    def watch(
        self,
        key: bytes,
        range_end: bytes,
        start_revision: int,
        timeout: float,
        what: str,
        *,
        no_put: bool = False,
    ) -> Watch:
        request = watch_request(self.rpc, key, range_end, start_revision, no_put)

        def invoke(stub: Any, metadata: Metadata | None) -> tuple[Any, threading.Event, int]:
            return open_watch(stub, request, timeout, metadata)

        try:
            (call, stop, revision), endpoint = self._on_current_endpoint(4, invoke, timeout, what)
        except CompactedAtStart as e:
            raise Compacted(self.endpoint, e.revision) from None
        return Watch(call, stop, endpoint, revision,
                     lambda err: self._failed(err, endpoint, what))  # fmt: skip

    def close(self) -> None:
        with self._lock:
            self._closed = True
            channels, self._channels = self._channels, {}
        for channel, *_ in channels.values():
            channel.close()
