"""A user's own etcd client, as the lessor's transports see it: :class:`UserClient`.

``EtcdLessor(client=...)`` and ``AsyncEtcdLessor(client=...)`` take a python-etcd3-style client
(``pyetcd``'s or ``etcd3``'s). The lessor calls etcd through that client's generated stubs,
current channel, call credentials and auth metadata, with its own per-call timeouts. The client
picks its endpoint and logs in itself, so nothing rotates or logs in for it. :class:`UserClient`
is what the threaded transport (:class:`~lessor.etcd.client_transport.ClientTransport`) and the
asyncio one (:class:`~lessor.etcd.aio_client_transport.AsyncClientTransport`) share, as their
base class: which messages to build, where calls go, the auth they carry, and what a failure
means.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import grpc

from lessor.etcd.rpc_errors import RetryableRpc, translate

__all__ = ["UserClient"]


class UserClient:
    """A python-etcd3-style client (``pyetcd``'s or ``etcd3``'s), used through its stubs, for
    a subclass that makes the calls. The client stays the user's to close."""

    def __init__(self, client: Any) -> None:
        for attribute in ("kvstub", "leasestub"):
            if not hasattr(client, attribute):
                raise TypeError(
                    f"client {client!r} has no {attribute!r}: pass a pyetcd or etcd3 client"
                )
        package = type(client).__module__.split(".")[0]
        self.rpc: ModuleType = importlib.import_module(f"{package}.etcdrpc")
        exceptions = importlib.import_module(f"{package}.exceptions")
        # What a call through the client can fail with: gRPC's errors, and the client's own
        # refusals before any RPC, e.g. pyetcd's "Trying to use a failed node" (ValueError)
        # and NoServerAvailableError.
        self._failures: tuple[type[Exception], ...] = (
            grpc.RpcError,
            ValueError,
            exceptions.Etcd3Exception,
        )
        self._client = client

    @property
    def endpoint(self) -> str:
        """The endpoint the client uses now."""
        ep = getattr(self._client, "endpoint_in_use", None)
        if ep is not None:
            return str(getattr(ep, "netloc", ep))
        host, port = getattr(self._client, "host", None), getattr(self._client, "port", None)
        return f"{host}:{port}" if host else "etcd"

    @property
    def endpoints(self) -> list[str]:
        """One: the client chooses its endpoint itself."""
        return [self.endpoint]

    def _auth(self) -> tuple[Any, Any]:
        """What a call carries to be the client's user: its call credentials and metadata."""
        return getattr(self._client, "call_credentials", None), getattr(
            self._client, "metadata", None
        )

    def _stub(self, name: str) -> Any:
        """The client's stub ``name`` (``"kvstub"``, ``"leasestub"``), on its current channel."""
        return getattr(self._client, name)

    def _watch_stub(self) -> Any:
        """A watch stub on the client's current channel (the clients keep none the lessor can
        use: theirs serve their own watchers)."""
        return self.rpc.WatchStub(self._client.channel)

    def _failed(self, err: Exception, what: str) -> Exception:
        """What a failure of :attr:`_failures` becomes: translated, or retryable when the
        client refused before any RPC (its endpoint is marked failed, or none is left)."""
        if isinstance(err, grpc.RpcError):
            return translate(err, self.endpoint, what)
        return RetryableRpc(self.endpoint, grpc.StatusCode.UNAVAILABLE, str(err))
