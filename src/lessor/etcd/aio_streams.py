"""etcd's two streaming calls, as the lessor makes them in asyncio: one keep-alive, and a watch.

They mirror the threaded ones (:mod:`lessor.etcd.streams`), and read etcd's answers with the same
functions (:mod:`lessor.etcd.stream_messages`):

* **Keep-alive once** (:func:`keep_alive_once`): the first answer of a ``LeaseKeepAlive`` stream
  that sent one request, and the stream cancelled.
* **Watch** (:func:`open_watch`, then :class:`AsyncWatch`): a stream confirmed by etcd within a
  timeout, iterated with ``async for`` for
  :class:`~lessor.etcd.stream_messages.WatchEvent` s; :meth:`AsyncWatch.cancel` ends it at once.

A stream's answers come from a :class:`Responses`: a ``grpc.aio`` call's (:class:`AioResponses`,
for :class:`~lessor.etcd.aio_channels.AsyncChannels`), or a threaded gRPC call's read on a thread
of its own (:class:`ThreadedResponses`, for a user's client,
:class:`~lessor.etcd.aio_client_transport.AsyncClientTransport`).

**Cancellation.** When the task awaiting a call is cancelled, the call is cancelled and
:class:`asyncio.CancelledError` propagates, untranslated. ``grpc.aio`` raises
:class:`asyncio.CancelledError` too for a call that something else cancelled (its channel was
closed, its watch cancelled): :func:`awaited` tells the two apart, and raises the latter as a
failed call (``CANCELLED``), which a transport translates as any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Protocol, TypeVar

import grpc
import grpc.aio

from lessor.etcd.aio_timeout import within
from lessor.etcd.stream_messages import (
    KEEP_ALIVE_UNANSWERED,
    WATCH_ENDED,
    WATCH_UNANSWERED,
    Refused,
    WatchEvent,
    WatchStream,
    watch_created,
    watch_events,
    watch_timed_out,
)

__all__ = [
    "AioResponses",
    "AsyncWatch",
    "Responses",
    "ThreadedResponses",
    "awaited",
    "keep_alive_once",
    "open_watch",
    "watch_requests",
]

T = TypeVar("T")


async def awaited(call: Awaitable[T]) -> T:
    """The outcome of a ``grpc.aio`` call (or of a read of its stream).

    :class:`asyncio.CancelledError` propagates only when it is the awaiting task's own
    cancellation; a call something else cancelled (its channel closed) raises as a failed call.
    """
    try:
        return await call
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise
        raise Refused(
            grpc.StatusCode.CANCELLED, "the call was cancelled: its connection was closed"
        ) from None


class Responses(Protocol):
    """A stream's answers, as the asyncio streams read them."""

    async def read(self) -> Any | None:
        """The next answer; None once the stream ended. A failed stream raises its failure."""
        ...

    def cancel(self) -> None:
        """End the stream (both ways): a read in progress ends."""
        ...


class _Call:
    """A stream's call, and what ends its sending side when it is cancelled (if anything)."""

    def __init__(self, call: Any, stop: asyncio.Event | threading.Event | None = None) -> None:
        self._call = call
        self._stop = stop

    def cancel(self) -> None:
        if self._stop is not None:
            self._stop.set()
        self._call.cancel()


class AioResponses(_Call):
    """A ``grpc.aio`` stream's answers; ``stop``, if given, ends its sending side
    (:func:`watch_requests`) when it is cancelled."""

    async def read(self) -> Any | None:
        response = await awaited(self._call.read())
        return None if response is grpc.aio.EOF else response


async def watch_requests(first: Any, stop: asyncio.Event) -> AsyncIterator[Any]:
    """A watch's requests: the create request, then nothing until the watch is cancelled (the
    sending side stays open, as etcd's own clients keep it)."""
    yield first
    await stop.wait()


class ThreadedResponses(_Call):
    """A threaded gRPC stream's answers (a user's client's channel is not a ``grpc.aio`` one),
    read on a thread of its own and handed to the event loop.

    Make it in the event loop that reads it. The thread ends with the stream: at its end, at
    its failure, or when it is cancelled. ``stop``, if given, ends the stream's sending side
    (:func:`~lessor.etcd.streams.sending`) when it is cancelled.
    """

    def __init__(self, call: Any, stop: threading.Event | None = None) -> None:
        super().__init__(call, stop)
        self._loop = asyncio.get_running_loop()
        self._answers: asyncio.Queue[Any] = asyncio.Queue()
        self._end: Any = None  # what ended the stream (None, or its failure), once read
        self._ended = False
        threading.Thread(target=self._pump, name="lessor etcd stream", daemon=True).start()

    def _pump(self) -> None:
        try:
            for response in self._call:
                self._hand(response)
            self._hand(None)
        except Exception as e:  # grpc.RpcError, mostly: handed to the reader
            self._hand(e)

    def _hand(self, item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody reads any more
            self._loop.call_soon_threadsafe(self._answers.put_nowait, item)

    async def read(self) -> Any | None:
        item = self._end if self._ended else await self._answers.get()
        if item is None or isinstance(item, Exception):
            self._end, self._ended = item, True
        if isinstance(item, Exception):
            raise item
        return item


async def keep_alive_once(responses: Responses) -> Any:
    """The answer to a keep-alive stream's one request, and the stream cancelled."""
    try:
        response = await responses.read()
    finally:
        responses.cancel()
    if response is None:
        raise Refused(grpc.StatusCode.UNAVAILABLE, KEEP_ALIVE_UNANSWERED)
    return response


async def open_watch(responses: Responses, timeout: float) -> int:
    """Wait, at most ``timeout``, for etcd to confirm a watch; the revision it confirmed it at.

    A refused watch raises as a failed call (:class:`~lessor.etcd.stream_messages.Refused`), a
    compacted start revision :class:`~lessor.etcd.stream_messages.CompactedAtStart`; a stream
    that is not confirmed is cancelled. (A deadline on the call would end the whole watch.)
    """
    try:
        try:
            first = await within(responses.read(), timeout)
        except TimeoutError:
            raise watch_timed_out(timeout) from None
        if first is None:
            raise Refused(grpc.StatusCode.UNAVAILABLE, WATCH_UNANSWERED)
        return watch_created(first)
    except BaseException:  # refused, or the task cancelled: nobody will read the stream
        responses.cancel()
        raise


class AsyncWatch(WatchStream):
    """A watch stream (see :class:`~lessor.etcd.stream_messages.WatchStream`) read in asyncio:
    iterate it with ``async for``, :meth:`cancel` it from any task. When the iterating task is
    cancelled, the stream is cancelled too. Use it as an async context manager, or call
    :meth:`cancel`, so that its stream ends.
    """

    def __init__(
        self,
        responses: Responses,
        endpoint: str,
        revision: int,
        failed: Callable[[grpc.RpcError], Exception],
    ) -> None:
        super().__init__(endpoint, revision, failed)
        self._responses = responses
        self._events: deque[WatchEvent] = deque()

    def __aiter__(self) -> AsyncWatch:
        return self

    async def __anext__(self) -> WatchEvent:
        while not self._cancelled:
            if self._events:
                return self._events.popleft()
            try:
                self._events.extend(watch_events(await self._answer(), self.endpoint))
            except grpc.RpcError as e:
                if self._cancelled:
                    break
                self.cancel()
                raise self._failed(e) from None
            except BaseException:  # compacted, or the task cancelled: over, one way or another
                self.cancel()
                raise
        raise StopAsyncIteration

    async def _answer(self) -> Any:
        """The stream's next answer; its end, as a failed call."""
        response = await self._responses.read()
        if response is None:
            raise Refused(grpc.StatusCode.UNAVAILABLE, WATCH_ENDED)
        return response

    def cancel(self) -> None:
        super().cancel()
        self._responses.cancel()

    async def __aenter__(self) -> AsyncWatch:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()
