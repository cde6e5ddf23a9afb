"""etcd's two streaming calls, as the lessor makes them: one keep-alive, and a watch.

* **Keep-alive once** (:func:`keep_alive_once`): one ``LeaseKeepAlive`` round trip on a stream
  of its own, answered with the lease's TTL (:func:`renewed_ttl`; TTL 0 is
  :class:`~lessor.etcd.rpc_errors.LeaseNotFound`). The lessor renews a shared lease just before
  an acquisition attaches to it, never in the background, so it needs no long-lived stream.
* **Watch** (:func:`open_watch`, then :class:`Watch`): a stream confirmed by etcd within a
  timeout, iterated for :class:`WatchEvent` s, which another thread can cancel at once. A broken
  stream raises :class:`~lessor.etcd.rpc_errors.RetryableRpc`, a start revision etcd compacted
  away :class:`Compacted`; either way the watcher reads afresh rather than resume.

Both streams carry ``hasleader`` metadata, as etcd's Go client does: a member that loses its
leader ends them instead of leaving them silent. A failure that arrives inside a stream's
answer (a refused watch, a stream ended unanswered) is raised as a failed call
(:class:`_Refused`), so that a transport meets it with the same handling as a unary call's:
stale-token login, rotation, translation. The transports (:mod:`lessor.etcd.channels`,
:mod:`lessor.etcd.client_transport`) supply the stub, the metadata and the credentials.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any

import grpc

from lessor.etcd.rpc_errors import LeaseNotFound

__all__ = [
    "Compacted",
    "CompactedAtStart",
    "Metadata",
    "Watch",
    "WatchEvent",
    "keep_alive_once",
    "keep_alive_request",
    "open_watch",
    "renewed_ttl",
    "watch_request",
]

Metadata = tuple[tuple[str, str], ...]

# A watch etcd refuses at its creation is not a failed call: etcd answers with a cancelled
# watch whose reason is the error's text, e.g. "rpc error: code = PermissionDenied desc =
# etcdserver: permission denied" (measured on 3.5.16; an invalid token reads the same with
# code = Unauthenticated).
_GO_STATUS = re.compile(r"rpc error: code = (\w+) desc = (.*)", re.DOTALL)

# etcd's api/v3rpc/rpctypes/metadatafields.go: MetadataRequireLeaderKey, MetadataHasLeader.
# A stream that carries it is refused, and ended, by a member that has no leader.
_REQUIRE_LEADER = ("hasleader", "true")
_DELETE = 1  # mvccpb.Event.EventType DELETE (PUT is 0)


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


def keep_alive_once(method: Any, request: Any, timeout: float, metadata: Any,
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


def keep_alive_request(rpc: ModuleType, lease_id: int) -> Any:
    """The request :func:`keep_alive_once` sends to renew ``lease_id``."""
    return rpc.LeaseKeepAliveRequest(ID=lease_id)


def renewed_ttl(response: Any, endpoint: str, lease_id: int, what: str) -> int:
    """The TTL a keep-alive's answer gives the lease; :class:`LeaseNotFound` if none."""
    ttl = int(response.TTL)
    if ttl <= 0:  # etcd answers TTL 0 for a lease it does not know (expired or revoked)
        raise LeaseNotFound(f"{what}: etcd {endpoint} does not know lease {lease_id:x}")
    return ttl


def watch_request(
    rpc: ModuleType, key: bytes, range_end: bytes, start_revision: int, no_put: bool
) -> Any:
    """The request :func:`open_watch` sends: watch ``[key, range_end)`` from a revision."""
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


def open_watch(
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
        raise CompactedAtStart(int(first.compact_revision))
    elif failure is None and (first.canceled or not first.created):
        failure = _Refused.of_reason(first.cancel_reason)
    if failure is not None:
        stop.set()
        call.cancel()
        raise failure
    return call, stop, int(first.header.revision)


class CompactedAtStart(Exception):
    """What :func:`open_watch` raises for a start revision etcd has compacted away; the
    transport, which knows the endpoint, raises it as :class:`Compacted`."""

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
