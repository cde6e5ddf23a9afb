"""Our own gRPC channels to etcd: a :class:`~lessor.etcd.transport.Transport` over a list of
endpoints, with fail-over rotation and auth login, on gRPC's threads.

* **One endpoint at a time.** Every call, unary or streaming, goes to the current endpoint
  (:meth:`Channels._on_current_endpoint`). A call that finds it unreachable or overloaded
  (:func:`~lessor.etcd.rpc_errors.retryable`) moves later calls to the following endpoint and
  raises :class:`~lessor.etcd.rpc_errors.RetryableRpc`: the caller's retry loop decides whether
  to try again. The first endpoint is a random one, or the first given.
* **Auth.** With a user and password, calls carry a token from one login shared by every
  thread. A call whose token etcd refuses as expired, or as issued before the last change to
  users and roles (:func:`~lessor.etcd.rpc_errors.stale_token`), logs in again, once, and is
  made again, as etcd's Go client does.
* **Channels.** One per endpoint, opened at its first call, with short reconnect back-offs and
  keep-alive pings; :meth:`Channels.close` closes them, and a closed ``Channels`` never opens
  one again (a late clean-up fails instead).

What is kept and decided (endpoints, rotation, the token, what a failure means) is
:class:`~lessor.etcd.connection.Connection`'s, shared with the asyncio channels
(:class:`~lessor.etcd.aio_channels.AsyncChannels`); here are the calls and the waiting.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import grpc

from lessor.etcd.connection import AUTH, KV, LEASE, WATCH, Connection, TLSConfig
from lessor.etcd.stream_messages import (
    Compacted,
    CompactedAtStart,
    Metadata,
    keep_alive_request,
    renewed_ttl,
    watch_request,
)
from lessor.etcd.streams import Watch, keep_alive_once, open_watch

__all__ = ["Channels", "TLSConfig"]

T = TypeVar("T")


class Channels(Connection[threading.Lock]):
    """gRPC channels to a list of endpoints; calls go to one, and move on when it fails."""

    _grpc: ClassVar[Any] = grpc

    def _new_login_lock(self) -> threading.Lock:
        return threading.Lock()

    def _token_for(self, endpoint: str, timeout: float, stale: str | None = None) -> str:
        """The auth token to send: the current one, or a new login's if there is none yet
        or it is still ``stale`` (another thread may have replaced it in the meantime)."""
        token = self._usable_token(stale)
        if token is not None:
            return token
        if not self._login_lock.acquire(timeout=timeout):
            raise self._login_busy(endpoint, timeout)
        try:  # another thread may have logged in while this one waited for it
            return self._usable_token(stale) or self._login(endpoint, timeout)
        finally:
            self._login_lock.release()

    def _login(self, endpoint: str, timeout: float) -> str:
        auth = self._stubs(endpoint)[AUTH]
        try:
            return self._logged_in(auth.Authenticate(self._login_request(), timeout=timeout))
        except grpc.RpcError as e:
            raise self._login_failed(e, endpoint) from None

    def _on_current_endpoint(
        self,
        which: int,
        invoke: Callable[[Any, Metadata | None], T],
        timeout: float,
        what: str,
    ) -> tuple[T, str]:
        """A call on the current endpoint, made once: ``invoke(stub, metadata)``, the
        stub being ``_stubs(endpoint)[which]``; its result, and the endpoint it went to.

        Every call, unary or streaming, goes through here: a stale token logs in again once
        and the call is made again; a retryable failure moves later calls to the next
        endpoint; every failure leaves translated (:class:`~lessor.etcd.connection.Call`).
        """
        endpoint = self.endpoint
        stub = self._stubs(endpoint)[which]
        call = self._start_call(endpoint, what)
        while True:
            if call.wants_token:
                call.token = self._token_for(endpoint, timeout, stale=call.token)
            try:
                return invoke(stub, call.metadata), endpoint
            except grpc.RpcError as e:
                call.failed(e)

    def _unary(self, which: int, method: str, request: Any, timeout: float, what: str) -> Any:
        def invoke(stub: Any, metadata: Metadata | None) -> Any:
            return getattr(stub, method)(request, timeout=timeout, metadata=metadata)

        return self._on_current_endpoint(which, invoke, timeout, what)[0]

    def kv(self, method: str, request: Any, timeout: float, what: str) -> Any:
        return self._unary(KV, method, request, timeout, what)

    def lease(self, method: str, request: Any, timeout: float, what: str) -> Any:
        return self._unary(LEASE, method, request, timeout, what)

    def keep_alive(self, lease_id: int, timeout: float, what: str) -> int:
        request = keep_alive_request(self.rpc, lease_id)

        def invoke(stub: Any, metadata: Metadata | None) -> Any:
            return keep_alive_once(stub.LeaseKeepAlive, request, timeout, metadata)

        response, endpoint = self._on_current_endpoint(LEASE, invoke, timeout, what)
        return renewed_ttl(response, endpoint, lease_id, what)

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

        def invoke(stub: Any, metadata: Metadata | None) -> tuple[Any, threading.Event, int]:
            return open_watch(stub, request, timeout, metadata)

        try:
            (call, stop, revision), endpoint = self._on_current_endpoint(
                WATCH, invoke, timeout, what
            )
        except CompactedAtStart as e:
            raise Compacted(self.endpoint, e.revision) from None
        return Watch(call, stop, endpoint, revision,
                     lambda err: self._failed(err, endpoint, what))  # fmt: skip

    def close(self) -> None:
        for channel in self._shut():
            channel.close()
