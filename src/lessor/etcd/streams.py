"""etcd's two streaming calls, as the lessor makes them on gRPC's threads: one keep-alive, and a
watch.

* **Keep-alive once** (:func:`keep_alive_once`): one ``LeaseKeepAlive`` round trip on a stream
  of its own. The lessor renews a shared lease just before an acquisition attaches to it, never
  in the background, so it needs no long-lived stream.
* **Watch** (:func:`open_watch`, then :class:`Watch`): a stream confirmed by etcd within a
  timeout, iterated for :class:`~lessor.etcd.stream_messages.WatchEvent` s, which another
  thread can cancel at once. A broken stream raises
  :class:`~lessor.etcd.rpc_errors.RetryableRpc`, a start revision etcd compacted away
  :class:`~lessor.etcd.stream_messages.Compacted`; either way the watcher reads afresh rather
  than resume.

What the requests are and what etcd's answers mean (``hasleader`` metadata, the TTL, a refused
or compacted watch) is :mod:`lessor.etcd.stream_messages`'s, shared with the asyncio streams
(:mod:`lessor.etcd.aio_streams`). The transports (:mod:`lessor.etcd.channels`,
:mod:`lessor.etcd.client_transport`) supply the stub, the metadata and the credentials.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

import grpc

from lessor.etcd.stream_messages import (
    KEEP_ALIVE_UNANSWERED,
    WATCH_ENDED,
    WATCH_UNANSWERED,
    CompactedAtStart,
    Metadata,
    Refused,
    WatchEvent,
    WatchStream,
    stream_metadata,
    watch_created,
    watch_events,
    watch_timed_out,
)

__all__ = ["Watch", "keep_alive_once", "open_watch", "sending"]


def keep_alive_once(method: Any, request: Any, timeout: float, metadata: Metadata | None,
                    credentials: Any = None) -> Any:  # fmt: skip
    """One ``LeaseKeepAlive`` round trip on a stream of its own: one request (the sending
    side then closes), the first answer, and the stream cancelled."""
    call = method(iter((request,)), timeout=timeout, metadata=stream_metadata(metadata),
                  credentials=credentials)  # fmt: skip
    try:
        return next(call)
    except StopIteration:
        raise Refused(grpc.StatusCode.UNAVAILABLE, KEEP_ALIVE_UNANSWERED) from None
    finally:
        call.cancel()


def sending(first: Any, stop: threading.Event) -> Iterator[Any]:
    """A watch's requests: the create request, then nothing until the watch is cancelled.

    The sending side stays open, as etcd's own clients keep it: gRPC's thread that sends the
    requests waits here, and ends when ``stop`` is set (by :meth:`Watch.cancel`).
    """
    yield first
    stop.wait()


def open_watch(
    stub: Any, request: Any, timeout: float, metadata: Metadata | None, credentials: Any = None
) -> tuple[Any, threading.Event, int]:
    """Start a watch stream and wait, at most ``timeout``, for etcd to confirm it.

    Returns the call, the event that ends its sending side, and the revision of the
    confirmation. A refused watch raises as a failed call
    (:class:`~lessor.etcd.stream_messages.Refused`), a compacted start revision
    :class:`~lessor.etcd.stream_messages.CompactedAtStart`.

    A stream's first answer has no timeout of its own in gRPC, and a deadline on the call
    would end the whole watch: a timer cancels the call if no answer came in time, and is
    joined before this returns.
    """
    stop = threading.Event()
    call = stub.Watch(sending(request, stop), metadata=stream_metadata(metadata),
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
        first = next(call, None)  # None: the stream ended unanswered
    except grpc.RpcError as e:
        failure = e
    finally:
        timer.cancel()
        timer.join()
    try:
        if expired.is_set():  # even if the answer came as the timer fired: the call is cancelled
            raise watch_timed_out(timeout)
        if failure is not None:
            raise failure
        if first is None:
            raise Refused(grpc.StatusCode.UNAVAILABLE, WATCH_UNANSWERED)
        return call, stop, watch_created(first)
    except (grpc.RpcError, CompactedAtStart):
        stop.set()
        call.cancel()
        raise


class Watch(WatchStream):
    """A watch stream (see :class:`~lessor.etcd.stream_messages.WatchStream`) read on gRPC's
    threads: iterate it with ``for``, :meth:`cancel` it from any thread. Use it as a context
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
        super().__init__(endpoint, revision, failed)
        self._call = call
        self._stop = stop

    def __iter__(self) -> Iterator[WatchEvent]:
        try:
            while True:
                try:
                    events = watch_events(self._next(), self.endpoint)
                except grpc.RpcError as e:
                    if self._cancelled:
                        return
                    raise self._failed(e) from None
                yield from events
        finally:
            self.cancel()  # over, one way or another: end the stream and gRPC's sending thread

    def _next(self) -> Any:
        """The stream's next answer; its end, as a failed call."""
        try:
            return next(self._call)
        except StopIteration:
            raise Refused(grpc.StatusCode.UNAVAILABLE, WATCH_ENDED) from None

    def cancel(self) -> None:
        super().cancel()
        self._stop.set()
        self._call.cancel()

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()
