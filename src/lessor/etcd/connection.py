"""What our own channels to etcd keep and decide, threaded or asyncio alike: :class:`Connection`.

:class:`~lessor.etcd.channels.Channels` (threads) and
:class:`~lessor.etcd.aio_channels.AsyncChannels` (asyncio) are one transport over two gRPC APIs.
Everything but the I/O is here, once:

* **The endpoints**: checked, the first one random or the first given, and the rotation to the
  next after a retryable failure (:meth:`Connection._rotate`).
* **The channels**: one per endpoint, opened at its first call with :data:`CHANNEL_OPTIONS`, and
  never again once closed (:meth:`Connection._stubs`, :meth:`Connection._shut`).
* **The auth token**: one login's, shared by every caller; the login's request, and what its
  answer or its failure means.
* **What a failed call means** (:class:`Call`): log in again and make it again (once, on a stale
  token), or raise it translated, moving later calls on when it is retryable.

The subclasses supply the gRPC module their channels come from (``grpc`` or ``grpc.aio``) and the
lock that makes callers wait for a login in progress, and make the calls.
"""

from __future__ import annotations

import importlib
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar

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
from lessor.etcd.stream_messages import Metadata
from lessor.etcd.transport import parse_endpoint

__all__ = [
    "AUTH",
    "CHANNEL_OPTIONS",
    "KV",
    "LEASE",
    "WATCH",
    "Call",
    "Connection",
    "Stubs",
    "TLSConfig",
]

L = TypeVar("L")  # the lock a login is made under: a threading.Lock or an asyncio.Lock

# gRPC reconnects after a refused connection with a 1 s initial back-off by default; etcd
# members restart faster than that, and a lease deadline is often only seconds long.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    # Notice a dead or cut-off member under a long call (a watch, a lease's keep-alive
    # stream). etcd refuses pings more often than every 5 s (--grpc-keepalive-min-time), and
    # on a connection with no call at all (its enforcement policy does not permit them
    # without a stream): after three it closes the connection with GOAWAY "too_many_pings".
    # An idle channel's member is found dead by the next call's deadline instead.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 3_000),
    ("grpc.keepalive_permit_without_calls", 0),
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


class Stubs(NamedTuple):
    """An endpoint's channel and the stubs the lessor calls on it, indexed by :data:`KV`,
    :data:`LEASE`, :data:`AUTH` and :data:`WATCH`."""

    channel: Any  # a grpc.Channel or a grpc.aio.Channel
    kv: Any
    lease: Any
    auth: Any
    watch: Any


KV, LEASE, AUTH, WATCH = 1, 2, 3, 4


class Connection(Generic[L]):
    """Endpoints, their channels and the auth token, for a subclass that makes the calls.

    A subclass sets :attr:`_grpc`, the module whose ``secure_channel`` and
    ``insecure_channel`` open its channels, and makes :attr:`_login_lock`, its lock of type
    ``L`` that lets one caller at a time log in: callers that find the token stale together
    wait for the first one's login and share its token, rather than each logging in (a raft
    write each).
    """

    _grpc: ClassVar[Any]  # grpc or grpc.aio

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
        self.rpc: ModuleType = importlib.import_module("pyetcd.etcdrpc")
        self._credentials = tls.credentials() if tls is not None else None
        self._user, self._password = user, password
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        if endpoint_order not in ("random", "given"):
            raise ValueError(f"endpoint_order must be 'random' or 'given', got {endpoint_order!r}")
        # "random": a cluster's clients spread over its members instead of all starting on
        # the first; "given": start on the first (e.g. the member in the caller's datacenter).
        self._index = random.randrange(len(self._endpoints)) if endpoint_order == "random" else 0
        self._channels: dict[str, Stubs] = {}
        self._closed = False
        self._token: str | None = None
        self._login_lock: L = self._new_login_lock()

    def _new_login_lock(self) -> L:
        raise NotImplementedError

    @property
    def endpoint(self) -> str:
        return self._endpoints[self._index]

    @property
    def endpoints(self) -> list[str]:
        return list(self._endpoints)

    def _rotate(self, failed: str) -> None:
        """Move later calls to the endpoint after ``failed``, unless they moved already."""
        with self._lock:
            if self._endpoints[self._index] == failed and len(self._endpoints) > 1:
                self._index = (self._index + 1) % len(self._endpoints)

    def _stubs(self, endpoint: str) -> Stubs:
        """The endpoint's channel and stubs, opened at its first call."""
        with self._lock:
            found = self._channels.get(endpoint)
            if found is None:
                if self._closed:  # a late clean-up must not open a channel nobody closes
                    raise LessorError(f"etcd {endpoint}: the connection was closed")
                if self._credentials is not None:
                    channel = self._grpc.secure_channel(
                        endpoint, self._credentials, CHANNEL_OPTIONS
                    )
                else:
                    channel = self._grpc.insecure_channel(endpoint, CHANNEL_OPTIONS)
                rpc = self.rpc
                found = Stubs(channel, rpc.KVStub(channel), rpc.LeaseStub(channel),
                              rpc.AuthStub(channel), rpc.WatchStub(channel))  # fmt: skip
                self._channels[endpoint] = found
            return found

    def _shut(self) -> list[Any]:
        """Close for good: no channel opens again. The channels open so far, to close."""
        with self._lock:
            self._closed = True
            channels, self._channels = self._channels, {}
        return [stubs.channel for stubs in channels.values()]

    def _start_call(self, endpoint: str, what: str) -> Call:
        """A call about to be made on ``endpoint``: see :class:`Call`."""
        return Call(endpoint, what, auth=self._user is not None, failed=self._failed)

    # -- the auth token: the waiting for a login in progress is the subclass's -------------------

    def _usable_token(self, stale: str | None) -> str | None:
        """The token to send, if there is one and it is not ``stale``; else a login is due
        (unless another caller's, in progress, brings one)."""
        with self._lock:
            token = self._token
        return token if token is not None and token != stale else None

    def _login_request(self) -> Any:
        return self.rpc.AuthenticateRequest(name=self._user, password=self._password)

    def _logged_in(self, response: Any) -> str:
        """The token a login's answer brings, now shared by every caller."""
        token = str(response.token)
        with self._lock:
            self._token = token
        return token

    def _login_failed(self, err: grpc.RpcError, endpoint: str) -> Exception:
        """What a failed login raises; a retryable one moves later calls (and logins) on,
        or every retry would log in at the same member."""
        return self._failed(err, endpoint, f"authenticating as {self._user!r}")

    def _login_busy(self, endpoint: str, timeout: float) -> RetryableRpc:
        """What a caller raises that waited ``timeout`` for another caller's login."""
        return RetryableRpc(
            endpoint,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"waited {timeout}s for another caller's login as {self._user!r}",
        )

    def _failed(self, err: grpc.RpcError, endpoint: str, what: str) -> Exception:
        """What a failure on ``endpoint`` becomes; a retryable one moves later calls on."""
        if retryable(*status_of(err)):
            self._rotate(endpoint)
        return translate(err, endpoint, what)


class Call:
    """One call on one endpoint, unary or streaming, through a stale token.

    Its maker gets a token while :attr:`wants_token` (from the shared login, or a new one),
    makes the call with :attr:`metadata`, and hands a failure to :meth:`failed`: that raises
    what the failure means, or returns, once, when a stale token (see
    :func:`~lessor.etcd.rpc_errors.stale_token`) is to be replaced by a new login and the call
    made again, as etcd's Go client does.
    """

    def __init__(
        self,
        endpoint: str,
        what: str,
        *,
        auth: bool,
        failed: Callable[[grpc.RpcError, str, str], Exception],
    ) -> None:
        self._translated = failed  # Connection._failed: rotation and translation
        self._endpoint = endpoint
        self._what = what
        self._token: str | None = None
        self._refreshed = False
        self.wants_token = auth

    @property
    def token(self) -> str | None:
        """The token the call carries; the one etcd refused, while a new one is wanted."""
        return self._token

    @token.setter
    def token(self, token: str) -> None:
        self._token = token
        self.wants_token = False

    @property
    def metadata(self) -> Metadata | None:
        return (("token", self._token),) if self._token is not None else None

    def failed(self, err: grpc.RpcError) -> None:
        """Raise what ``err`` means; return if a new login may fix it (the first time only)."""
        code, details = status_of(err)
        if self._token is not None and stale_token(code, details):
            if not self._refreshed:
                self._refreshed = True
                self.wants_token = True
                return
            if AUTH_OLD_REVISION in details:
                # Users or roles changed again since the login: a passing race, and the next
                # attempt logs in anew.
                raise RetryableRpc(self._endpoint, code, details) from None
        raise self._translated(err, self._endpoint, self._what) from None
