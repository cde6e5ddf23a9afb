"""etcd's two streams as messages: what the lessor sends, and what etcd's answers mean.

No I/O here: :mod:`lessor.etcd.streams` makes the calls on gRPC's threads and
:mod:`lessor.etcd.aio_streams` in asyncio, and both read etcd's answers with these functions.

* **Keep-alive**: one :func:`keep_alive_request`; the answer's TTL (:func:`renewed_ttl`), where
  TTL 0 is :class:`~lessor.etcd.rpc_errors.LeaseNotFound`.
* **Watch**: one :func:`watch_request`; its first answer confirms it (:func:`watch_created`:
  the revision, or a refusal), and each later answer is a batch of :class:`WatchEvent` s
  (:func:`watch_events`), or the news that the revisions asked for are compacted
  (:class:`Compacted`) or that etcd ended the watch. What a confirmed watch promises its reader
  is :class:`WatchStream`'s, the base of the threaded and the asyncio watch.

Both streams carry ``hasleader`` metadata (:func:`stream_metadata`), as etcd's Go client does: a
member that loses its leader ends them instead of leaving them silent. A failure that arrives
inside a stream's answer (a refused watch, a stream ended unanswered) is raised as a failed call
(:class:`Refused`), so that a transport meets it with the same handling as a unary call's:
stale-token login, rotation, translation.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import grpc

from lessor.etcd.rpc_errors import LeaseNotFound

__all__ = [
    "KEEP_ALIVE_UNANSWERED",
    "WATCH_ENDED",
    "WATCH_UNANSWERED",
    "Compacted",
    "CompactedAtStart",
    "Metadata",
    "Refused",
    "WatchEvent",
    "WatchStream",
    "keep_alive_request",
    "renewed_ttl",
    "stream_metadata",
    "watch_created",
    "watch_events",
    "watch_request",
    "watch_timed_out",
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

# The details of a stream that ended where an answer was due (status UNAVAILABLE).
KEEP_ALIVE_UNANSWERED = "keep-alive stream ended unanswered"
WATCH_UNANSWERED = "watch stream ended unanswered"
WATCH_ENDED = "etcd ended the watch stream"


class Compacted(Exception):
    """A watch started at a revision etcd has compacted away: its events are lost.

    ``revision`` is the compaction's, the oldest a watch can still start at. The watcher must
    read the state afresh rather than resume.
    """

    def __init__(self, endpoint: str, revision: int) -> None:
        super().__init__(f"etcd {endpoint}: revisions before {revision} are compacted")
        self.endpoint = endpoint
        self.revision = revision


class CompactedAtStart(Exception):
    """What :func:`watch_created` raises for a start revision etcd has compacted away; the
    transport, which knows the endpoint, raises it as :class:`Compacted`."""

    def __init__(self, revision: int) -> None:
        super().__init__(revision)
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


class Refused(grpc.RpcError):
    """A failure that reached us other than as a call's status, shaped as a failed call so
    that it meets the same handling (stale token, rotation, translation): inside a stream's
    answer (a refused watch, a stream ended unanswered), or, in asyncio, as the cancellation of
    a call that something else than its task cancelled
    (:func:`~lessor.etcd.aio_streams.awaited`)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    @classmethod
    def of_reason(cls, reason: str) -> Refused:
        """The status a cancelled watch's reason names (UNKNOWN, and the reason, if none)."""
        found = _GO_STATUS.fullmatch(reason.strip())
        if found is None:
            return cls(grpc.StatusCode.UNKNOWN, reason or "etcd cancelled the watch")
        name = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", found[1]).upper()  # PermissionDenied
        code = grpc.StatusCode.__members__.get(name, grpc.StatusCode.UNKNOWN)
        return cls(code, found[2])


def stream_metadata(metadata: Metadata | None) -> Metadata:
    """A call's metadata (its auth token, if any), and ``hasleader`` for a stream."""
    return (*(metadata or ()), _REQUIRE_LEADER)


def keep_alive_request(rpc: ModuleType, lease_id: int) -> Any:
    """The one request a keep-alive sends to renew ``lease_id``."""
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
    """The request that starts a watch of ``[key, range_end)`` from a revision."""
    create = rpc.WatchCreateRequest(
        key=key,
        range_end=range_end,
        start_revision=start_revision,
        filters=[rpc.WatchCreateRequest.NOPUT] if no_put else [],
    )
    return rpc.WatchRequest(create_request=create)


def watch_created(first: Any) -> int:
    """The revision at which etcd confirmed a watch, from its first answer.

    Raises :class:`CompactedAtStart` when the start revision is compacted (not at creation
    in etcd 3.5; a later etcd may), and a refusal as a failed call (:class:`Refused`).
    """
    if first.compact_revision:
        raise CompactedAtStart(int(first.compact_revision))
    if first.canceled or not first.created:
        raise Refused.of_reason(first.cancel_reason)
    return int(first.header.revision)


def watch_timed_out(timeout: float) -> Refused:
    """The failure of a watch etcd did not confirm within ``timeout`` seconds."""
    return Refused(grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer to a watch in {timeout:.3f}s")


def watch_events(response: Any, endpoint: str) -> list[WatchEvent]:
    """The events of a watch's later answer.

    Raises :class:`Compacted` when etcd no longer has the revisions asked for, and a watch
    etcd cancelled as a failed call (:class:`Refused`); either way the watch is over.
    """
    if response.compact_revision:
        raise Compacted(endpoint, int(response.compact_revision))
    if response.canceled:
        raise Refused.of_reason(response.cancel_reason)
    return [
        WatchEvent(
            "DELETE" if event.type == _DELETE else "PUT",
            bytes(event.kv.key),
            int(event.kv.mod_revision),
        )
        for event in response.events
    ]


class WatchStream:
    """One watch stream etcd confirmed, for a subclass that reads it: iterate it for its
    events (:class:`WatchEvent`); :meth:`cancel` it, which ends the iteration at once, without
    an error.

    The iteration raises :class:`~lessor.etcd.rpc_errors.RetryableRpc` when the stream breaks
    (its member died, lost its leader, or the connection dropped), :class:`Compacted` when etcd
    no longer has the revisions asked for, and a :class:`~lessor.errors.LessorError` when etcd
    refused it. Either way the stream is over: watch again, from a revision read afresh.
    ``failed`` translates a failure of the stream into what the iteration raises.
    """

    def __init__(
        self, endpoint: str, revision: int, failed: Callable[[grpc.RpcError], Exception]
    ) -> None:
        self._failed = failed
        self._cancelled = False
        self.endpoint = endpoint
        self.revision = revision  # etcd's revision when it confirmed the watch

    def cancel(self) -> None:
        """End the watch: the stream is cancelled, and an iteration in progress ends."""
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        return self._cancelled
