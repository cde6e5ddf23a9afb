"""gRPC calls to etcd, with per-call deadlines, endpoint rotation and lessor's errors.

The lessor speaks etcd's v3 gRPC API through the generated stubs of the python-etcd3 family
rather than through the clients' convenience methods, because those take no per-call timeout,
hide the Txn header (whose revision is the fencing token), latch an endpoint as "failed" for
minutes after one error (pyetcd), and let raw ``grpc.RpcError`` escape for most status codes.

Two transports share one interface:

* :class:`Channels`: our own gRPC channels, one per endpoint. A call that finds its endpoint
  unreachable or overloaded moves the next call to the following endpoint; the caller's retry
  loop decides whether to try again. A call whose auth token etcd refuses as expired, or as
  issued before the last change to users and roles, logs in again (once) and is retried.
* :class:`ClientTransport`: a client the user built (``pyetcd`` or ``etcd3``), used through
  its stubs, channel and auth token.

Besides unary calls, both make two streaming ones: :meth:`~Transport.keep_alive`, one
``LeaseKeepAlive`` round trip, and :meth:`~Transport.watch`, a watch that another thread can
cancel. Both go through the same attempt as a unary call (one endpoint, the same stale-token
login, the same rotation and error translation); the streams ask etcd to end them when their
member loses its leader (``hasleader`` metadata, as etcd's Go client does), so a member cut off
from the cluster fails them instead of leaving them silent.

Every failure leaves here as a :class:`~lessor.errors.LessorError` naming the endpoint, or as
:class:`RetryableRpc` / :class:`LeaseNotFound` / :class:`Compacted`, which the lessor handles
itself.
"""

from __future__ import annotations

import importlib
import random
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any, Protocol, TypeVar

import grpc

from lessor.errors import LessorError, PermissionDenied, Unavailable

__all__ = [
    "Channels",
    "ClientTransport",
    "Compacted",
    "LeaseNotFound",
    "RetryableRpc",
    "TLSConfig",
    "Transport",
    "Watch",
    "WatchEvent",
    "parse_endpoint",
]

T = TypeVar("T")
Metadata = tuple[tuple[str, str], ...]

_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}

# etcd's own strings, from api/v3rpc/rpctypes/error.go (etcd-io/etcd):
#   ErrGRPCNoSpace                = status.New(codes.ResourceExhausted,
#                                       "etcdserver: mvcc: database space exceeded")
#   ErrGRPCRequestTooManyRequests = status.New(codes.ResourceExhausted,
#                                       "etcdserver: too many requests")
#   ErrGRPCInvalidAuthToken       = status.New(codes.Unauthenticated,
#                                       "etcdserver: invalid auth token")
#   ErrGRPCAuthOldRevision        = status.New(codes.InvalidArgument,
#                                       "etcdserver: revision of auth store is old")
# RESOURCE_EXHAUSTED alone says nothing: NOSPACE lasts until an operator acts, "too many
# requests" (a member whose applied index lags its committed index) passes by itself, and
# gRPC uses the code too for a message over a size limit ("... larger than max (N vs. M)").
_NO_SPACE = "database space exceeded"
_TOO_MANY_REQUESTS = "etcdserver: too many requests"
_INVALID_AUTH_TOKEN = "invalid auth token"
_AUTH_OLD_REVISION = "revision of auth store is old"
_TOO_LARGE = re.compile(r"larger than max \((\d+) vs\. (\d+)\)")
# A watch etcd refuses at its creation is not a failed call: etcd answers with a cancelled
# watch whose reason is the error's text, e.g. "rpc error: code = PermissionDenied desc =
# etcdserver: permission denied" (measured on 3.5.16; an invalid token reads the same with
# code = Unauthenticated).
_GO_STATUS = re.compile(r"rpc error: code = (\w+) desc = (.*)", re.DOTALL)

# etcd's api/v3rpc/rpctypes/metadatafields.go: MetadataRequireLeaderKey, MetadataHasLeader.
# A stream that carries it is refused, and ended, by a member that has no leader.
_REQUIRE_LEADER = ("hasleader", "true")
_DELETE = 1  # mvccpb.Event.EventType DELETE (PUT is 0)

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


class RetryableRpc(Exception):
    """A call failed in a way another attempt (maybe on another endpoint) can fix.

    Whether the request took effect is unknown: a write may have committed.
    """

    def __init__(self, endpoint: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"etcd {endpoint}: {code.name}: {details}")
        self.endpoint = endpoint
        self.code = code


class LeaseNotFound(Exception):
    """etcd does not know the lease a request named: it expired or was revoked."""


class Compacted(Exception):
    """A watch started at a revision etcd has compacted away: its events are lost.

    ``revision`` is the compaction's, the oldest a watch can still start at. The watcher must
    read the state afresh rather than resume.
    """

    def __init__(self, endpoint: str, revision: int) -> None:
        super().__init__(f"etcd {endpoint}: revisions before {revision} are compacted")
        self.endpoint = endpoint
        self.revision = revision


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change a watch saw: a key put or deleted (by a request, or by its lease's end)."""

    kind: str  # "PUT" or "DELETE"
    key: bytes
    mod_revision: int  # the revision of the change

    @property
    def deleted(self) -> bool:
        return self.kind == "DELETE"


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


def parse_endpoint(text: str) -> str:
    """Check a ``host:port`` endpoint (a scheme such as ``http://`` is tolerated and dropped)."""
    if not isinstance(text, str):
        raise TypeError(f"etcd endpoint must be a 'host:port' str, got {text!r}")
    bare = text.strip()
    for scheme in ("http://", "https://"):
        if bare.startswith(scheme):
            bare = bare[len(scheme) :]
    bare = bare.rstrip("/")
    host, sep, port = bare.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"etcd endpoint must look like 'host:port', got {text!r}")
    return bare


class Transport(Protocol):
    """What the lessor needs from a connection to etcd."""

    rpc: ModuleType  # the generated messages (etcdrpc) matching the stubs

    @property
    def endpoint(self) -> str: ...

    @property
    def endpoints(self) -> list[str]: ...

    def kv(self, method: str, request: Any, timeout: float, what: str) -> Any: ...

    def lease(self, method: str, request: Any, timeout: float, what: str) -> Any: ...

    def keep_alive(self, lease_id: int, timeout: float, what: str) -> int:
        """Renew a lease once (one ``LeaseKeepAlive`` round trip); the TTL etcd answered.

        Raises :class:`LeaseNotFound` when etcd does not know the lease.
        """
        ...

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
        """Watch ``[key, range_end)`` from ``start_revision`` (``no_put``: deletions only).

        Returns once etcd has confirmed the watch, within ``timeout``; the :class:`Watch`
        then runs until cancelled or broken.
        """
        ...

    def close(self) -> None: ...


def _retryable(code: object, details: str) -> bool:
    # etcd (3.5.16 at least) can answer a read it could not serve for want of quorum with
    # UNKNOWN "context deadline exceeded", racing gRPC's own DEADLINE_EXCEEDED.
    return (
        code in _RETRYABLE
        or (
            code == grpc.StatusCode.UNKNOWN
            and ("context deadline exceeded" in details or "context canceled" in details)
        )
        # An overloaded member refuses before proposing anything; another member, or this
        # one a moment later, can serve.
        or (code == grpc.StatusCode.RESOURCE_EXHAUSTED and _TOO_MANY_REQUESTS in details)
    )


def _stale_token(code: object, details: str) -> bool:
    """etcd refused the request's auth token, and a new login can fix that.

    This is what etcd's Go client retries after logging in again (``shouldRefreshToken`` in
    client/v3/retry_interceptor.go: ``ErrInvalidAuthToken`` or ``ErrAuthOldRevision``): a
    simple token expires when idle (``--auth-token-ttl``), and any change to users, roles or
    permissions makes every token issued before it old, which a JWT token carries in itself.
    """
    return (code == grpc.StatusCode.UNAUTHENTICATED and _INVALID_AUTH_TOKEN in details) or (
        code == grpc.StatusCode.INVALID_ARGUMENT and _AUTH_OLD_REVISION in details
    )


def _exhausted(endpoint: str, what: str, details: str) -> Exception:
    """What a RESOURCE_EXHAUSTED that is not "too many requests" (retryable) means.

    A message over a gRPC size limit is neither out of space nor passing: the same request
    would fail again. gRPC in this process says ``CLIENT: Received ...`` or ``CLIENT: Sent
    ...``; etcd's gRPC server says ``grpc: received message larger than max``.
    """
    found = _TOO_LARGE.search(details)
    if found is None and _NO_SPACE in details:
        return Unavailable(
            f"{what}: etcd {endpoint} is out of space ({details}); an operator must compact "
            "and defragment it and disarm the NOSPACE alarm"
        )
    if found is None:
        return LessorError(f"{what}: etcd {endpoint} failed: RESOURCE_EXHAUSTED: {details}")
    size, limit = f"{found[1]} bytes", f"{found[2]} bytes"
    if "CLIENT:" in details and "Received" in details:
        message, whose = f"etcd {endpoint}'s answer was {size}", "this client's receive limit"
        setting = "grpc.max_receive_message_length"
    elif "CLIENT:" in details:
        message, whose = f"the request to etcd {endpoint} was {size}", "this client's send limit"
        setting = "grpc.max_send_message_length"
    else:
        message, whose = f"the request to etcd {endpoint} was {size}", "etcd's limit"
        setting = "etcd's --max-request-bytes plus 512 KiB of gRPC overhead"
    return LessorError(f"{what}: {message}, over {whose} of {limit} ({setting}): {details}")


def _status(err: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    """A failed call's status code and details (UNKNOWN, and the text, when it has none)."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = (err.details() if hasattr(err, "details") else str(err)) or ""
    return code, details


def translate(err: grpc.RpcError, endpoint: str, what: str) -> Exception:
    """The exception a failed call becomes; ``what`` names the operation and section."""
    code, details = _status(err)
    if _retryable(code, details):
        return RetryableRpc(endpoint, code, details)
    if code == grpc.StatusCode.NOT_FOUND and "lease not found" in details:
        return LeaseNotFound(details)
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        return PermissionDenied(f"{what}: etcd {endpoint} refused: {details}")
    if code == grpc.StatusCode.INVALID_ARGUMENT and (
        "authentication failed" in details
        or "user name" in details
        or _AUTH_OLD_REVISION in details
    ):
        # Channels logs in again on an old token (see _stale_token); a user's own client
        # (ClientTransport) must do so itself.
        refused = (
            "a token issued before its users or roles last changed (log in again)"
            if _AUTH_OLD_REVISION in details
            else "the credentials"
        )
        return PermissionDenied(f"{what}: etcd {endpoint} refused {refused}: {details}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return _exhausted(endpoint, what, details)
    return LessorError(f"{what}: etcd {endpoint} failed: {code.name}: {details}")


class _Refused(grpc.RpcError):
    """A failure that reached us inside a stream's answer rather than as the call's status,
    shaped as a failed call so that it meets the same handling (stale token, rotation,
    translation)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    @classmethod
    def of_reason(cls, reason: str) -> _Refused:
        """The status a cancelled watch's reason names (UNKNOWN, and the reason, if none)."""
        found = _GO_STATUS.fullmatch(reason.strip())
        if found is None:
            return cls(grpc.StatusCode.UNKNOWN, reason or "etcd cancelled the watch")
        name = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", found[1]).upper()  # PermissionDenied
        code = grpc.StatusCode.__members__.get(name, grpc.StatusCode.UNKNOWN)
        return cls(code, found[2])


def _stream_metadata(metadata: Any) -> Metadata:
    return (*(metadata or ()), _REQUIRE_LEADER)


def _keep_alive_once(method: Any, request: Any, timeout: float, metadata: Any,
                     credentials: Any = None) -> Any:  # fmt: skip
    """One ``LeaseKeepAlive`` round trip on a stream of its own: one request (the sending
    side then closes), the first answer, and the stream cancelled."""
    call = method(iter((request,)), timeout=timeout, metadata=_stream_metadata(metadata),
                  credentials=credentials)  # fmt: skip
    try:
        return next(call)
    except StopIteration:
        raise _Refused(grpc.StatusCode.UNAVAILABLE, "keep-alive stream ended unanswered") from None
    finally:
        call.cancel()


def _keep_alive_request(rpc: ModuleType, lease_id: int) -> Any:
    return rpc.LeaseKeepAliveRequest(ID=lease_id)


def _ttl(response: Any, endpoint: str, lease_id: int, what: str) -> int:
    ttl = int(response.TTL)
    if ttl <= 0:  # etcd answers TTL 0 for a lease it does not know (expired or revoked)
        raise LeaseNotFound(f"{what}: etcd {endpoint} does not know lease {lease_id:x}")
    return ttl


def _watch_request(
    rpc: ModuleType, key: bytes, range_end: bytes, start_revision: int, no_put: bool
) -> Any:
    create = rpc.WatchCreateRequest(
        key=key,
        range_end=range_end,
        start_revision=start_revision,
        filters=[rpc.WatchCreateRequest.NOPUT] if no_put else [],
    )
    return rpc.WatchRequest(create_request=create)


def _sending(first: Any, stop: threading.Event) -> Iterator[Any]:
    """A watch's requests: the create request, then nothing until the watch is cancelled.

    The sending side stays open, as etcd's own clients keep it: gRPC's thread that sends the
    requests waits here, and ends when ``stop`` is set (by :meth:`Watch.cancel`).
    """
    yield first
    stop.wait()


def _open_watch(
    stub: Any, request: Any, timeout: float, metadata: Any, credentials: Any = None
) -> tuple[Any, threading.Event, int]:
    """Start a watch stream and wait, at most ``timeout``, for etcd to confirm it.

    Returns the call, the event that ends its sending side, and the revision of the
    confirmation. A refused watch raises as a failed call (:class:`_Refused`).

    A stream's first answer has no timeout of its own in gRPC, and a deadline on the call
    would end the whole watch: a timer cancels the call if no answer came in time, and is
    joined before this returns.
    """
    stop = threading.Event()
    call = stub.Watch(_sending(request, stop), metadata=_stream_metadata(metadata),
                      credentials=credentials)  # fmt: skip
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        call.cancel()

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    first: Any = None
    failure: grpc.RpcError | None = None
    try:
        first = next(call)
    except grpc.RpcError as e:
        failure = e
    except StopIteration:
        failure = _Refused(grpc.StatusCode.UNAVAILABLE, "watch stream ended unanswered")
    finally:
        timer.cancel()
        timer.join()
    if expired.is_set():  # even if the answer came as the timer fired: the call is cancelled
        failure = _Refused(
            grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer to a watch in {timeout:.3f}s"
        )
    elif failure is None and first.compact_revision:  # not at creation in 3.5; a later etcd?
        stop.set()
        call.cancel()
        raise _Compacted(int(first.compact_revision))
    elif failure is None and (first.canceled or not first.created):
        failure = _Refused.of_reason(first.cancel_reason)
    if failure is not None:
        stop.set()
        call.cancel()
        raise failure
    return call, stop, int(first.header.revision)


class _Compacted(Exception):
    """Compacted, before the endpoint is known."""

    def __init__(self, revision: int) -> None:
        super().__init__(revision)
        self.revision = revision


class Watch:
    """One watch stream: iterate it for its events (:class:`WatchEvent`); :meth:`cancel` it
    from any thread, which ends the iteration at once, without an error.

    The iteration raises :class:`RetryableRpc` when the stream breaks (its member died, lost
    its leader, or the connection dropped), :class:`Compacted` when etcd no longer has the
    revisions asked for, and a :class:`~lessor.errors.LessorError` when etcd refused it. Either
    way the stream is over: watch again, from a revision read afresh. Use it as a context
    manager, or call :meth:`cancel`, so that its stream and gRPC's thread end.
    """

    def __init__(
        self,
        call: Any,
        stop: threading.Event,
        endpoint: str,
        revision: int,
        failed: Callable[[grpc.RpcError], Exception],
    ) -> None:
        self._call = call
        self._stop = stop
        self._failed = failed
        self._cancelled = False
        self.endpoint = endpoint
        self.revision = revision  # etcd's revision when it confirmed the watch

    def __iter__(self) -> Iterator[WatchEvent]:
        try:
            while True:
                try:
                    response = next(self._call)
                except StopIteration:
                    if self._cancelled:
                        return
                    raise self._failed(
                        _Refused(grpc.StatusCode.UNAVAILABLE, "etcd ended the watch stream")
                    ) from None
                except grpc.RpcError as e:
                    if self._cancelled:
                        return
                    raise self._failed(e) from None
                if response.compact_revision:
                    raise Compacted(self.endpoint, int(response.compact_revision))
                if response.canceled:
                    if self._cancelled:
                        return
                    raise self._failed(_Refused.of_reason(response.cancel_reason))
                for event in response.events:
                    yield WatchEvent(
                        "DELETE" if event.type == _DELETE else "PUT",
                        bytes(event.kv.key),
                        int(event.kv.mod_revision),
                    )
        finally:
            self.cancel()  # over, one way or another: end the stream and gRPC's sending thread

    def cancel(self) -> None:
        """End the watch: the stream is cancelled, and an iteration in progress ends."""
        self._cancelled = True
        self._stop.set()
        self._call.cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()


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
                if _retryable(*_status(e)):
                    self._rotate(endpoint)  # or every retry would log in at the same member
                raise translate(e, endpoint, f"authenticating as {self._user!r}") from None
            with self._lock:
                self._token = token
            return token
        finally:
            self._login_lock.release()

    def _attempt(
        self,
        which: int,
        invoke: Callable[[Any, Metadata | None], T],
        timeout: float,
        what: str,
    ) -> tuple[T, str]:
        """One attempt at a call on the current endpoint: ``invoke(stub, metadata)``, the
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
                code, details = _status(e)
                if token is not None and _stale_token(code, details):
                    if not refreshed:  # log in again, once, and retry (see _stale_token)
                        refreshed = True
                        token = self._token_for(endpoint, timeout, stale=token)
                        continue
                    if _AUTH_OLD_REVISION in details:
                        # Users or roles changed again since the login: a passing race, and
                        # the next attempt logs in anew.
                        raise RetryableRpc(endpoint, code, details) from None
                raise self._failed(e, endpoint, what) from None

    def _failed(self, err: grpc.RpcError, endpoint: str, what: str) -> Exception:
        """What a failure on ``endpoint`` becomes; a retryable one moves later calls on."""
        if _retryable(*_status(err)):
            self._rotate(endpoint)
        return translate(err, endpoint, what)

    def _call(self, which: int, method: str, request: Any, timeout: float, what: str) -> Any:
        def invoke(stub: Any, metadata: Metadata | None) -> Any:
            return getattr(stub, method)(request, timeout=timeout, metadata=metadata)

        return self._attempt(which, invoke, timeout, what)[0]

    def _rotate(self, failed: str) -> None:
        with self._lock:
            if self._endpoints[self._index] == failed and len(self._endpoints) > 1:
                self._index = (self._index + 1) % len(self._endpoints)

    def kv(self, method: str, request: Any, timeout: float, what: str) -> Any:
        return self._call(1, method, request, timeout, what)

    def lease(self, method: str, request: Any, timeout: float, what: str) -> Any:
        return self._call(2, method, request, timeout, what)

    def keep_alive(self, lease_id: int, timeout: float, what: str) -> int:
        request = _keep_alive_request(self.rpc, lease_id)

        def invoke(stub: Any, metadata: Metadata | None) -> Any:
            return _keep_alive_once(stub.LeaseKeepAlive, request, timeout, metadata)

        response, endpoint = self._attempt(2, invoke, timeout, what)
        return _ttl(response, endpoint, lease_id, what)

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
        request = _watch_request(self.rpc, key, range_end, start_revision, no_put)

        def invoke(stub: Any, metadata: Metadata | None) -> tuple[Any, threading.Event, int]:
            return _open_watch(stub, request, timeout, metadata)

        try:
            (call, stop, revision), endpoint = self._attempt(4, invoke, timeout, what)
        except _Compacted as e:
            raise Compacted(self.endpoint, e.revision) from None
        return Watch(call, stop, endpoint, revision,
                     lambda err: self._failed(err, endpoint, what))  # fmt: skip

    def close(self) -> None:
        with self._lock:
            self._closed = True
            channels, self._channels = self._channels, {}
        for channel, *_ in channels.values():
            channel.close()


class ClientTransport:
    """A user's python-etcd3-style client (``pyetcd``'s or ``etcd3``'s), used through its stubs."""

    def __init__(self, client: Any) -> None:
        for attribute in ("kvstub", "leasestub"):
            if not hasattr(client, attribute):
                raise TypeError(
                    f"client {client!r} has no {attribute!r}: pass a pyetcd or etcd3 client"
                )
        package = type(client).__module__.split(".")[0]
        self.rpc = importlib.import_module(f"{package}.etcdrpc")
        exceptions = importlib.import_module(f"{package}.exceptions")
        # e.g. pyetcd's NoServerAvailableError, raised before any RPC is made
        self._client_errors: type[Exception] = exceptions.Etcd3Exception
        self._client = client

    @property
    def endpoint(self) -> str:
        ep = getattr(self._client, "endpoint_in_use", None)
        if ep is not None:
            return str(getattr(ep, "netloc", ep))
        host, port = getattr(self._client, "host", None), getattr(self._client, "port", None)
        return f"{host}:{port}" if host else "etcd"

    @property
    def endpoints(self) -> list[str]:
        """One: the client chooses its endpoint itself."""
        return [self.endpoint]

    def _attempt(self, invoke: Callable[[Any, Any], T], what: str) -> T:
        """``invoke(credentials, metadata)`` with the client's auth; failures translated.
        The client logs in and picks its endpoint itself."""
        try:
            return invoke(
                getattr(self._client, "call_credentials", None),
                getattr(self._client, "metadata", None),
            )
        except grpc.RpcError as e:
            raise translate(e, self.endpoint, what) from None
        except (ValueError, self._client_errors) as e:
            # pyetcd's "Trying to use a failed node", NoServerAvailableError and their like
            raise RetryableRpc(self.endpoint, grpc.StatusCode.UNAVAILABLE, str(e)) from None

    def _call(self, stub_name: str, method: str, request: Any, timeout: float, what: str) -> Any:
        def invoke(credentials: Any, metadata: Any) -> Any:
            stub = getattr(self._client, stub_name)
            return getattr(stub, method)(
                request, timeout=timeout, credentials=credentials, metadata=metadata
            )

        return self._attempt(invoke, what)

    def kv(self, method: str, request: Any, timeout: float, what: str) -> Any:
        return self._call("kvstub", method, request, timeout, what)

    def lease(self, method: str, request: Any, timeout: float, what: str) -> Any:
        return self._call("leasestub", method, request, timeout, what)

    def keep_alive(self, lease_id: int, timeout: float, what: str) -> int:
        request = _keep_alive_request(self.rpc, lease_id)

        def invoke(credentials: Any, metadata: Any) -> Any:
            method = self._client.leasestub.LeaseKeepAlive
            return _keep_alive_once(method, request, timeout, metadata, credentials)

        return _ttl(self._attempt(invoke, what), self.endpoint, lease_id, what)

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
        request = _watch_request(self.rpc, key, range_end, start_revision, no_put)

        def invoke(credentials: Any, metadata: Any) -> tuple[Any, threading.Event, int]:
            stub = self.rpc.WatchStub(self._client.channel)  # the client's current channel
            return _open_watch(stub, request, timeout, metadata, credentials)

        try:
            call, stop, revision = self._attempt(invoke, what)
        except _Compacted as e:
            raise Compacted(self.endpoint, e.revision) from None
        endpoint = self.endpoint
        return Watch(call, stop, endpoint, revision,
                     lambda err: translate(err, endpoint, what))  # fmt: skip

    def close(self) -> None:
        """The user's client stays the user's to close."""
