"""A user's own etcd client as an :class:`~lessor.etcd.aio_transport.AsyncTransport`.

``AsyncEtcdLessor(client=...)`` takes what ``EtcdLessor(client=...)`` takes: a python-etcd3-style
client (``pyetcd``'s or ``etcd3``'s), as :class:`~lessor.etcd.user_client.UserClient` describes.
Those clients are threaded: their channels are ``grpc`` channels, not ``grpc.aio`` ones, and
their auth token cannot be renewed without the password they do not keep. So
:class:`AsyncClientTransport` calls etcd through the client itself, as
:class:`~lessor.etcd.client_transport.ClientTransport` does (its endpoint choice, fail-over, TLS
and token), without blocking the event loop:

* **Unary calls** are gRPC futures the event loop awaits; a cancelled task cancels its call.
* **Streams** (keep-alive, watch) are read on a thread of their own, one a stream, which ends
  with it (:class:`~lessor.etcd.aio_streams.ThreadedResponses`).

Nothing here rotates or logs in: a failure is translated, and the client's own refusals before
any RPC are :class:`~lessor.etcd.rpc_errors.RetryableRpc`. The client stays the user's to close.
For ``grpc.aio`` channels of the lessor's own, give it endpoints instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from lessor.etcd.aio_streams import AsyncWatch, ThreadedResponses, keep_alive_once, open_watch
from lessor.etcd.rpc_errors import translate
from lessor.etcd.stream_messages import (
    Compacted,
    CompactedAtStart,
    keep_alive_request,
    renewed_ttl,
    stream_metadata,
    watch_request,
)
from lessor.etcd.streams import sending
from lessor.etcd.user_client import UserClient

__all__ = ["AsyncClientTransport"]

T = TypeVar("T")


async def _outcome(future: grpc.Future[Any]) -> Any:
    """A threaded gRPC call's result, awaited without blocking the loop; the call is cancelled
    when the awaiting task is."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def wake() -> None:
        if not done.done():
            done.set_result(None)

    def settled(_: grpc.Future[Any]) -> None:  # on gRPC's thread, or at once if already done
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody awaits the result
            loop.call_soon_threadsafe(wake)

    future.add_done_callback(settled)
    try:
        await done
    except asyncio.CancelledError:
        future.cancel()
        raise
    return future.result()  # a failed call raises itself: it is a grpc.RpcError


class AsyncClientTransport(UserClient):
    """A user's python-etcd3-style client (``pyetcd``'s or ``etcd3``'s), used from asyncio."""

    async def _through_client(self, invoke: Callable[[Any, Any], Awaitable[T]], what: str) -> T:
        """``await invoke(credentials, metadata)`` with the client's auth; failures
        translated. The client logs in and picks its endpoint itself."""
        try:
            return await invoke(*self._auth())
        except self._failures as e:
            raise self._failed(e, what) from None

    async def _unary(
        self, stub_name: str, method: str, request: Any, timeout: float, what: str
    ) -> Any:
        def invoke(credentials: Any, metadata: Any) -> Awaitable[Any]:
            start = getattr(self._stub(stub_name), method).future
            return _outcome(
                start(request, timeout=timeout, credentials=credentials, metadata=metadata)
            )

        return await self._through_client(invoke, what)

    async def kv(self, method: str, request: Any, timeout: float, what: str) -> Any:
        return await self._unary("kvstub", method, request, timeout, what)

    async def lease(self, method: str, request: Any, timeout: float, what: str) -> Any:
        return await self._unary("leasestub", method, request, timeout, what)

    async def keep_alive(self, lease_id: int, timeout: float, what: str) -> int:
        request = keep_alive_request(self.rpc, lease_id)

        def invoke(credentials: Any, metadata: Any) -> Awaitable[Any]:
            call = self._stub("leasestub").LeaseKeepAlive(
                iter((request,)), timeout=timeout, metadata=stream_metadata(metadata),
                credentials=credentials,
            )  # fmt: skip
            return keep_alive_once(ThreadedResponses(call))

        response = await self._through_client(invoke, what)
        return renewed_ttl(response, self.endpoint, lease_id, what)

    async def watch(
        self,
        key: bytes,
        range_end: bytes,
        start_revision: int,
        timeout: float,
        what: str,
        *,
        no_put: bool = False,
    ) -> AsyncWatch:
        request = watch_request(self.rpc, key, range_end, start_revision, no_put)

        async def invoke(credentials: Any, metadata: Any) -> tuple[ThreadedResponses, int]:
            stop = threading.Event()
            call = self._watch_stub().Watch(
                sending(request, stop), metadata=stream_metadata(metadata),
                credentials=credentials,
            )  # fmt: skip
            responses = ThreadedResponses(call, stop)
            return responses, await open_watch(responses, timeout)

        try:
            responses, revision = await self._through_client(invoke, what)
        except CompactedAtStart as e:
            raise Compacted(self.endpoint, e.revision) from None
        endpoint = self.endpoint
        return AsyncWatch(responses, endpoint, revision,
                          lambda err: translate(err, endpoint, what))  # fmt: skip

    async def close(self) -> None:
        """The user's client stays the user's to close."""
