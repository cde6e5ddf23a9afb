"""An asyncio transport behind the threaded interface, so that one test serves both.

:class:`Blocking` is a :class:`~lessor.etcd.transport.Transport` whose calls are an
:class:`~lessor.etcd.aio_transport.AsyncTransport`'s, run in an event loop on a thread of its
own: the threaded transport tests (``tests/etcd/test_transport_streams.py``, ``test_tls.py``)
are parametrized with it instead of being copied for asyncio; :func:`our_channels` makes either
kind of our own channels. What only asyncio has (cancelled tasks) is tested natively, in
``tests/etcd/test_aio_transport.py``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from lessor.etcd.aio_channels import AsyncChannels
from lessor.etcd.aio_transport import AsyncTransport, AsyncWatch
from lessor.etcd.channels import Channels
from lessor.etcd.transport import Transport, WatchEvent

T = TypeVar("T")

KINDS = ("threads", "asyncio")
"""The kinds of :func:`our_channels`: ``Channels``, or ``AsyncChannels`` through ``Blocking``."""


def our_channels(kind: str, endpoints: list[str], **options: Any) -> Transport:
    """Our own channels to ``endpoints``, with ``Channels``' options, of a kind of
    :data:`KINDS`; the caller closes them."""
    if kind == "threads":
        return Channels(endpoints, **options)
    return Blocking(AsyncChannels(endpoints, **options))


class Blocking:
    """An asyncio transport, called from threads; :meth:`close` closes it and ends its loop
    and thread."""

    def __init__(self, inner: AsyncTransport) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="asyncio transport", daemon=True
        )
        self._thread.start()
        self.inner = inner
        self.rpc = inner.rpc

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` in the transport's loop, and wait for its outcome."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    @property
    def endpoint(self) -> str:
        return self.inner.endpoint

    @property
    def endpoints(self) -> list[str]:
        return self.inner.endpoints

    def kv(self, method: str, request: Any, timeout: float, what: str) -> Any:
        return self.run(self.inner.kv(method, request, timeout, what))

    def lease(self, method: str, request: Any, timeout: float, what: str) -> Any:
        return self.run(self.inner.lease(method, request, timeout, what))

    def keep_alive(self, lease_id: int, timeout: float, what: str) -> int:
        return self.run(self.inner.keep_alive(lease_id, timeout, what))

    def watch(self, *args: Any, **kwargs: Any) -> BlockingWatch:
        """The transport's ``watch(key, range_end, start_revision, timeout, what, *,
        no_put=False)``."""
        return BlockingWatch(self, self.run(self.inner.watch(*args, **kwargs)))

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self.run(self.inner.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()


class BlockingWatch:
    """An :class:`~lessor.etcd.aio_transport.AsyncWatch` iterated from a thread, as a
    :class:`~lessor.etcd.streams.Watch` is."""

    def __init__(self, transport: Blocking, watch: AsyncWatch) -> None:
        self._transport = transport
        self._watch = watch
        self.endpoint = watch.endpoint
        self.revision = watch.revision

    def __iter__(self) -> Iterator[WatchEvent]:
        while True:
            try:
                yield self._transport.run(self._next())
            except StopAsyncIteration:
                return

    async def _next(self) -> WatchEvent:
        return await anext(self._watch)

    def cancel(self) -> None:
        async def cancel() -> None:
            self._watch.cancel()

        self._transport.run(cancel())

    @property
    def cancelled(self) -> bool:
        return self._watch.cancelled

    def __enter__(self) -> BlockingWatch:
        return self

    def __exit__(self, *exception: object) -> None:
        self.cancel()
