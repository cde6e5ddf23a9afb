"""Our own ``grpc.aio`` channels to etcd: an :class:`~lessor.etcd.aio_transport.AsyncTransport`
over a list of endpoints, with fail-over rotation and auth login.

:class:`AsyncChannels` is :class:`~lessor.etcd.channels.Channels` in asyncio: the same arguments,
and what is kept and decided is the same :class:`~lessor.etcd.connection.Connection`'s, so it
behaves the same way:

* **One endpoint at a time**, a random one first or the first given; a retryable failure moves
  later calls to the next one and raises :class:`~lessor.etcd.rpc_errors.RetryableRpc`.
* **Auth**: one login shared by every task (the others wait for it, at most the call's timeout);
  a stale token logs in again, once, and the call is made again.
* **Channels**: one per endpoint, opened at its first call with the same options; once
  :meth:`AsyncChannels.close` has run, none opens again.

**Cancellation.** A task cancelled while it awaits a call cancels that call (``grpc.aio`` does),
and :class:`asyncio.CancelledError` propagates, never translated. A call in flight when the
channels close fails as a :class:`~lessor.errors.LessorError` (``CANCELLED``), as in
:class:`~lessor.etcd.channels.Channels`.

**One event loop.** A ``grpc.aio`` channel belongs to the loop it was opened in, so
``AsyncChannels`` serve the event loop of their first call; a call from another loop raises
:class:`RuntimeError` (make one ``AsyncChannels`` per loop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

import grpc
import grpc.aio

from lessor.etcd.aio_streams import (
    AioResponses,
    AsyncWatch,
    awaited,
    keep_alive_once,
    open_watch,
    watch_requests,
)
from lessor.etcd.aio_timeout import within
from lessor.etcd.connection import AUTH, KV, LEASE, WATCH, Connection, Stubs
from lessor.etcd.stream_messages import (
    Compacted,
    CompactedAtStart,
    Metadata,
    keep_alive_request,
    renewed_ttl,
    stream_metadata,
    watch_request,
)

__all__ = ["AsyncChannels"]

T = TypeVar("T")


class AsyncChannels(Connection[asyncio.Lock]):
    """``grpc.aio`` channels to a list of endpoints; calls go to one, and move on when it fails.

    Its arguments are :class:`~lessor.etcd.channels.Channels`'s: ``endpoints``, and ``tls``,
    ``user`` and ``password``, ``connect_timeout``, ``endpoint_order``.
    """

    _grpc: ClassVar[Any] = grpc.aio
    _loop: asyncio.AbstractEventLoop | None = None  # the loop of the first call

    def _new_login_lock(self) -> asyncio.Lock:
        return asyncio.Lock()

    def _stubs(self, endpoint: str) -> Stubs:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError(
                f"AsyncChannels to {', '.join(self._endpoints)} serve the event loop of their "
                "first call, not this one: make one per event loop"
            )
        return super()._stubs(endpoint)

    async def _token_for(self, endpoint: str, timeout: float, stale: str | None = None) -> str:
        """The auth token to send: the current one, or a new login's if there is none yet
        or it is still ``stale`` (another task may have replaced it in the meantime)."""
        token = self._usable_token(stale)
        if token is not None:
            return token
        try:
            await within(self._login_lock.acquire(), timeout)
        except TimeoutError:
            raise self._login_busy(endpoint, timeout) from None
        try:  # another task may have logged in while this one waited for it
            return self._usable_token(stale) or await self._login(endpoint, timeout)
        finally:
            self._login_lock.release()

    async def _login(self, endpoint: str, timeout: float) -> str:
        request = self._login_request()
        try:
            answer = await awaited(
                self._stubs(endpoint)[AUTH].Authenticate(request, timeout=timeout)
            )
        except grpc.RpcError as e:
            raise self._login_failed(e, endpoint) from None
        return self._logged_in(answer)

    async def _on_current_endpoint(
        self,
        which: int,
        invoke: Callable[[Any, Metadata | None], Awaitable[T]],
        timeout: float,
        what: str,
    ) -> tuple[T, str]:
        """A call on the current endpoint, made once: ``await invoke(stub, metadata)``, the
        stub being ``_stubs(endpoint)[which]``; its result, and the endpoint it went to.

        Every call goes through here, and meets its failure as
        :class:`~lessor.etcd.connection.Call` decides: a new login and the call again, once,
        or the failure translated (a retryable one moves later calls on).
        """
        endpoint = self.endpoint
        stub = self._stubs(endpoint)[which]
        call = self._start_call(endpoint, what)
        while True:
            if call.wants_token:
                call.token = await self._token_for(endpoint, timeout, stale=call.token)
            try:
                return await invoke(stub, call.metadata), endpoint
            except grpc.RpcError as e:
                call.failed(e)

    async def _unary(self, which: int, method: str, request: Any, timeout: float, what: str) -> Any:
        def invoke(stub: Any, metadata: Metadata | None) -> Awaitable[Any]:
            return awaited(getattr(stub, method)(request, timeout=timeout, metadata=metadata))

        return (await self._on_current_endpoint(which, invoke, timeout, what))[0]

    async def kv(self, method: str, request: Any, timeout: float, what: str) -> Any:
        return await self._unary(KV, method, request, timeout, what)

    async def lease(self, method: str, request: Any, timeout: float, what: str) -> Any:
        return await self._unary(LEASE, method, request, timeout, what)

    async def keep_alive(self, lease_id: int, timeout: float, what: str) -> int:
        request = keep_alive_request(self.rpc, lease_id)

        def invoke(stub: Any, metadata: Metadata | None) -> Awaitable[Any]:
            call = stub.LeaseKeepAlive(
                iter((request,)), timeout=timeout, metadata=stream_metadata(metadata)
            )
            return keep_alive_once(AioResponses(call))

        response, endpoint = await self._on_current_endpoint(LEASE, invoke, timeout, what)
        return renewed_ttl(response, endpoint, lease_id, what)

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

        async def invoke(stub: Any, metadata: Metadata | None) -> tuple[AioResponses, int]:
            stop = asyncio.Event()
            call = stub.Watch(watch_requests(request, stop), metadata=stream_metadata(metadata))
            responses = AioResponses(call, stop)
            return responses, await open_watch(responses, timeout)

        try:
            (responses, revision), endpoint = await self._on_current_endpoint(
                WATCH, invoke, timeout, what
            )
        except CompactedAtStart as e:
            raise Compacted(self.endpoint, e.revision) from None
        return AsyncWatch(responses, endpoint, revision,
                          lambda err: self._failed(err, endpoint, what))  # fmt: skip

    async def close(self) -> None:
        """Close the channels (calls in flight fail); none opens again."""
        for channel in self._shut():
            await channel.close()
