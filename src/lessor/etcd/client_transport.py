"""A user's own etcd client as a :class:`~lessor.etcd.transport.Transport`.

:class:`ClientTransport` adapts a python-etcd3-style client (``pyetcd``'s or ``etcd3``'s): the
lessor's calls go through the client's generated stubs, current channel, call credentials and
auth metadata, with the lessor's per-call timeouts. The client picks its endpoint and logs in
itself, so nothing here rotates or logs in: a failure is translated
(:func:`~lessor.etcd.rpc_errors.translate`), and the client's own refusals before any RPC
(e.g. pyetcd's ``NoServerAvailableError``) are :class:`~lessor.etcd.rpc_errors.RetryableRpc`.
The client stays the user's to close.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from lessor.etcd.rpc_errors import RetryableRpc, translate
from lessor.etcd.streams import (
    Compacted,
    CompactedAtStart,
    Watch,
    keep_alive_once,
    keep_alive_request,
    open_watch,
    renewed_ttl,
    watch_request,
)

__all__ = ["ClientTransport"]

T = TypeVar("T")


class ClientTransport:
    """A user's python-etcd3-style client (``pyetcd``'s or ``etcd3``'s), used through its stubs."""

    def __init__(self, client: Any) -> None:
        for attribute in ("kvstub", "leasestub"):
            if not hasattr(client, attribute):
                raise TypeError(
                    f"client {client!r} has no {attribute!r}: pass a pyetcd or etcd3 client"
                )
        package = type(client).__module__.split(".")[0]
        self.rpc = importlib.import_module(f"{package}.etcdrpc")
        exceptions = importlib.import_module(f"{package}.exceptions")
        # e.g. pyetcd's NoServerAvailableError, raised before any RPC is made
        self._client_errors: type[Exception] = exceptions.Etcd3Exception
        self._client = client

    @property
    def endpoint(self) -> str:
        ep = getattr(self._client, "endpoint_in_use", None)
        if ep is not None:
            return str(getattr(ep, "netloc", ep))
        host, port = getattr(self._client, "host", None), getattr(self._client, "port", None)
        return f"{host}:{port}" if host else "etcd"

    @property
    def endpoints(self) -> list[str]:
        """One: the client chooses its endpoint itself."""
        return [self.endpoint]

    def _through_client(self, invoke: Callable[[Any, Any], T], what: str) -> T:
        """``invoke(credentials, metadata)`` with the client's auth; failures translated.
        The client logs in and picks its endpoint itself."""
        try:
            return invoke(
                getattr(self._client, "call_credentials", None),
                getattr(self._client, "metadata", None),
            )
        except grpc.RpcError as e:
            raise translate(e, self.endpoint, what) from None
        except (ValueError, self._client_errors) as e:
            # pyetcd's "Trying to use a failed node", NoServerAvailableError and their like
            raise RetryableRpc(self.endpoint, grpc.StatusCode.UNAVAILABLE, str(e)) from None

    def _call(self, stub_name: str, method: str, request: Any, timeout: float, what: str) -> Any:
        def invoke(credentials: Any, metadata: Any) -> Any:
            stub = getattr(self._client, stub_name)
            return getattr(stub, method)(
                request, timeout=timeout, credentials=credentials, metadata=metadata
            )

        return self._through_client(invoke, what)

    def kv(self, method: str, request: Any, timeout: float, what: str) -> Any:
        return self._call("kvstub", method, request, timeout, what)

    def lease(self, method: str, request: Any, timeout: float, what: str) -> Any:
        return self._call("leasestub", method, request, timeout, what)

    def keep_alive(self, lease_id: int, timeout: float, what: str) -> int:
        request = keep_alive_request(self.rpc, lease_id)

        def invoke(credentials: Any, metadata: Any) -> Any:
            method = self._client.leasestub.LeaseKeepAlive
            return keep_alive_once(method, request, timeout, metadata, credentials)

        return renewed_ttl(self._through_client(invoke, what), self.endpoint, lease_id, what)

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
        request = watch_request(self.rpc, key, range_end, start_revision, no_put)

        def invoke(credentials: Any, metadata: Any) -> tuple[Any, threading.Event, int]:
            stub = self.rpc.WatchStub(self._client.channel)  # the client's current channel
            return open_watch(stub, request, timeout, metadata, credentials)

        try:
            call, stop, revision = self._through_client(invoke, what)
        except CompactedAtStart as e:
            raise Compacted(self.endpoint, e.revision) from None
        endpoint = self.endpoint
        return Watch(call, stop, endpoint, revision,
                     lambda err: translate(err, endpoint, what))  # fmt: skip

    def close(self) -> None:
        """The user's client stays the user's to close."""
