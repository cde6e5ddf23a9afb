"""The asyncio etcd lessor on the in-memory etcd model: calls that stay in flight across
awaits, so that a task can be cancelled before its call applies, or after it applied and before
its reply arrived (a cancelled ``grpc.aio`` call that committed anyway).

:class:`AsyncModelTransport` is an :class:`~lessor.etcd.aio_transport.AsyncTransport` over an
:class:`~tests.support.etcd_model.EtcdModel`: each call yields to the loop a few times (as
``rng`` chooses) before it applies and a few times after. :func:`model_lessor` makes an
:class:`~lessor.etcd.AsyncEtcdLessor` that talks to it.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import grpc

from lessor.etcd.aio_lessor import AsyncEtcdLessor
from lessor.etcd.aio_transport import AsyncTransport
from lessor.etcd.options import Options
from lessor.etcd.transport import LeaseNotFound, RetryableRpc
from tests.support.etcd_model import EtcdModel, rpc

__all__ = ["AsyncModelTransport", "model_lessor"]


class AsyncModelTransport:
    endpoint = "model:2379"

    def __init__(
        self, etcd: EtcdModel, rng: random.Random, *, spread: int = 3, faults: float = 0.0
    ) -> None:
        self.faults = faults
        self.endpoints = [self.endpoint]
        self.rpc = rpc
        self.etcd = etcd
        self.rng = rng
        self.spread = spread
        self.applied: list[tuple[str, str]] = []
        self.cancelled_after_apply: list[tuple[str, str]] = []

    async def _yields(self) -> None:
        for _ in range(self.rng.randrange(self.spread + 1)):
            await asyncio.sleep(0)

    async def _call(self, service: str, method: str, request: Any) -> Any:
        await self._yields()  # on its way: a cancel here means it never applied
        self.etcd.expire()
        fault = self.rng.random() < self.faults
        if fault and self.rng.random() < 0.5:
            raise RetryableRpc(self.endpoint, grpc.StatusCode.UNAVAILABLE, "dropped (model)")
        response = self.etcd.call(service, method, request)
        self.applied.append((service, method))
        if fault:
            raise RetryableRpc(self.endpoint, grpc.StatusCode.DEADLINE_EXCEEDED, "lost (model)")
        try:
            await self._yields()  # the reply on its way back: applied, whatever comes
        except asyncio.CancelledError:
            self.cancelled_after_apply.append((service, method))
            raise
        return response

    async def kv(self, method: str, request: Any, timeout: float, what: str) -> Any:
        return await self._call("kv", method, request)

    async def lease(self, method: str, request: Any, timeout: float, what: str) -> Any:
        return await self._call("lease", method, request)

    async def keep_alive(self, lease_id: int, timeout: float, what: str) -> int:
        response = await self._call(
            "lease", "LeaseKeepAlive", rpc.LeaseKeepAliveRequest(ID=lease_id)
        )
        if response.TTL <= 0:
            raise LeaseNotFound("etcdserver: requested lease not found")
        return int(response.TTL)

    async def watch(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("the model has no watches")

    async def close(self) -> None:
        pass


class _ModelLessor(AsyncEtcdLessor):
    _model_transport: AsyncTransport

    def _connect(self, options: Options) -> AsyncTransport:
        return self._model_transport


def model_lessor(transport: AsyncModelTransport, **kwargs: Any) -> AsyncEtcdLessor:
    """An :class:`AsyncEtcdLessor` whose calls go to ``transport``."""
    cls = type("ModelLessor", (_ModelLessor,), {"_model_transport": transport})
    return cls(["model:2379"], **kwargs)


def model(start: float | None = None) -> EtcdModel:
    """An etcd model on the real monotonic clock (the lessor's own)."""
    del start
    return EtcdModel(time.monotonic)
