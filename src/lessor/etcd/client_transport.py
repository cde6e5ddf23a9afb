"""A user's own etcd client as a :class:`~lessor.etcd.transport.Transport`, on gRPC's threads.

:class:`ClientTransport` makes the lessor's calls through a python-etcd3-style client
(``pyetcd``'s or ``etcd3``'s), as :class:`~lessor.etcd.user_client.UserClient` describes: the
client's stubs, channel and auth, the lessor's per-call timeouts. The client picks its endpoint
and logs in itself, so nothing here rotates or logs in: a failure is translated
(:func:`~lessor.etcd.rpc_errors.translate`), and the client's own refusals before any RPC
(e.g. pyetcd's ``NoServerAvailableError``) are :class:`~lessor.etcd.rpc_errors.RetryableRpc`.
The client stays the user's to close.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from lessor.etcd.rpc_errors import translate
from lessor.etcd.stream_messages import (
    Compacted,
    CompactedAtStart,
    keep_alive_request,
    renewed_ttl,
    watch_request,
)
from lessor.etcd.streams import Watch, keep_alive_once, open_watch
from lessor.etcd.user_client import UserClient

__all__ = ["ClientTransport"]

T = TypeVar("T")


class ClientTransport(UserClient):
    """A user's python-etcd3-style client (``pyetcd``'s or ``etcd3``'s), used through its stubs."""

    def _through_client(self, invoke: Callable[[Any, Any], T], what: str) -> T:
        """``invoke(credentials, metadata)`` with the client's auth; failures translated.
        The client logs in and picks its endpoint itself."""
        try:
            return invoke(*self._auth())
        except self._failures as e:
            raise self._failed(e, what) from None

    def _unary(self, stub_name: str, method: str, request: Any, timeout: float, what: str) -> Any:
        def invoke(credentials: Any, metadata: Any) -> Any:
            return getattr(self._stub(stub_name), method)(
                request, timeout=timeout, credentials=credentials, metadata=metadata
            )

        return self._through_client(invoke, what)

    def kv(self, method: str, request: Any, timeout: float, what: str) -> Any:
        return self._unary("kvstub", method, request, timeout, what)

    def lease(self, method: str, request: Any, timeout: float, what: str) -> Any:
        return self._unary("leasestub", method, request, timeout, what)

    def keep_alive(self, lease_id: int, timeout: float, what: str) -> int:
        request = keep_alive_request(self.rpc, lease_id)

        def invoke(credentials: Any, metadata: Any) -> Any:
            method = self._stub("leasestub").LeaseKeepAlive
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
            return open_watch(self._watch_stub(), request, timeout, metadata, credentials)

        try:
            call, stop, revision = self._through_client(invoke, what)
        except CompactedAtStart as e:
            raise Compacted(self.endpoint, e.revision) from None
        endpoint = self.endpoint
        return Watch(call, stop, endpoint, revision,
                     lambda err: translate(err, endpoint, what))  # fmt: skip

    def close(self) -> None:
        """The user's client stays the user's to close."""
