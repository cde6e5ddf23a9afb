"""The lessor's connection to etcd: the :class:`Transport` interface, and what an endpoint is.

The lessor speaks etcd's v3 gRPC API through the generated stubs of the python-etcd3 family
rather than through the clients' convenience methods, because those take no per-call timeout,
hide the Txn header (whose revision is the fencing token), latch an endpoint as "failed" for
minutes after one error (pyetcd), and let raw ``grpc.RpcError`` escape for most status codes.

Two transports implement the interface, one module each:

* :class:`~lessor.etcd.channels.Channels`: our own gRPC channels, one per endpoint, with
  fail-over rotation and auth login.
* :class:`~lessor.etcd.client_transport.ClientTransport`: a client the user built (``pyetcd``
  or ``etcd3``), used through its stubs, channel and auth token.

Both make unary calls, and etcd's two streaming ones (:mod:`lessor.etcd.streams`): one
keep-alive round trip, and a watch another thread can cancel. Every failure leaves a
transport translated (:mod:`lessor.etcd.rpc_errors`): as a :class:`~lessor.errors.LessorError`
naming the endpoint, or as :class:`RetryableRpc` / :class:`LeaseNotFound` /
:class:`~lessor.etcd.stream_messages.Compacted`, which the lessor handles itself. The types
this contract names are importable from here, beside the protocol, for code that only uses a
transport; the transports themselves import from the modules that define them. The asyncio
counterpart of this contract is :class:`~lessor.etcd.aio_transport.AsyncTransport`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Protocol

from lessor.etcd.rpc_errors import LeaseNotFound, RetryableRpc
from lessor.etcd.stream_messages import Compacted, WatchEvent
from lessor.etcd.streams import Watch

__all__ = [
    "Compacted",
    "LeaseNotFound",
    "RetryableRpc",
    "Transport",
    "Watch",
    "WatchEvent",
    "parse_endpoint",
]


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
