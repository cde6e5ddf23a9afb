"""The asyncio lessor's connection to etcd: the :class:`AsyncTransport` interface.

It is :class:`~lessor.etcd.transport.Transport` with awaitable calls: the same calls, the same
timeouts, the same errors with the same messages; what each call does is said there, once. Two
transports implement it, one module each:

* :class:`~lessor.etcd.aio_channels.AsyncChannels`: our own ``grpc.aio`` channels, one per
  endpoint, with fail-over rotation and auth login, over the same generated stubs as the
  threaded :class:`~lessor.etcd.channels.Channels`.
* :class:`~lessor.etcd.aio_client_transport.AsyncClientTransport`: a client the user built
  (``pyetcd`` or ``etcd3``), used through its stubs, channel and auth token.

Both make unary calls, and etcd's two streaming ones (:mod:`lessor.etcd.aio_streams`): one
keep-alive round trip, and a watch another task can cancel. Every failure leaves a transport
translated (:mod:`lessor.etcd.rpc_errors`): as a :class:`~lessor.errors.LessorError` naming the
endpoint, or as :class:`RetryableRpc` / :class:`LeaseNotFound` / :class:`Compacted`, which the
lessor handles itself. A cancelled task is the exception: :class:`asyncio.CancelledError`
propagates as it is, and the call it awaited is cancelled.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Protocol

from lessor.etcd.aio_streams import AsyncWatch
from lessor.etcd.rpc_errors import LeaseNotFound, RetryableRpc
from lessor.etcd.stream_messages import Compacted, WatchEvent

__all__ = [
    "AsyncTransport",
    "AsyncWatch",
    "Compacted",
    "LeaseNotFound",
    "RetryableRpc",
    "WatchEvent",
]


class AsyncTransport(Protocol):
    """What the asyncio lessor needs from a connection to etcd."""

    rpc: ModuleType  # the generated messages (etcdrpc) matching the stubs

    @property
    def endpoint(self) -> str: ...

    @property
    def endpoints(self) -> list[str]: ...

    async def kv(self, method: str, request: Any, timeout: float, what: str) -> Any: ...

    async def lease(self, method: str, request: Any, timeout: float, what: str) -> Any: ...

    async def keep_alive(self, lease_id: int, timeout: float, what: str) -> int:
        """As :meth:`Transport.keep_alive <lessor.etcd.transport.Transport.keep_alive>`."""
        ...

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
        """As :meth:`Transport.watch <lessor.etcd.transport.Transport.watch>`, the watch an
        :class:`AsyncWatch`."""
        ...

    async def close(self) -> None: ...
