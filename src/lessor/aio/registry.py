"""Asyncio lessors by id: ``register`` at import time, ``get`` when needed.

The same mechanism as :mod:`lessor.registry` (:class:`~lessor.registry.Registry`), for
:class:`~lessor.aio.AsyncLessor` factories: ``register(id, factory)``, ``get(ctx, id)``,
``registered()``, and the entry-point group ``lessor.aio_backends``, so that
``lessor.aio.get(ctx, "etcd")`` works without importing the etcd backend first. A backend's
aio factory takes the same ``ctx`` (and so the same settings) as its sync one.
"""

from __future__ import annotations

from collections.abc import Callable

from lessor.aio.contract import AsyncLessor
from lessor.context import Context
from lessor.registry import Registry

__all__ = ["ENTRY_POINT_GROUP", "AsyncFactory", "get", "register", "registered"]

ENTRY_POINT_GROUP = "lessor.aio_backends"

AsyncFactory = Callable[[Context], AsyncLessor]
"""``factory(ctx) -> AsyncLessor``: builds (or returns a shared) lessor; may read settings
from ctx."""

_factories: dict[str, AsyncFactory] = {}

_lessors = Registry[AsyncLessor](
    ENTRY_POINT_GROUP, AsyncLessor, "lessor.aio.AsyncLessor", "aio lessor", lambda: _factories
)
register, get, registered = _lessors.register, _lessors.get, _lessors.registered
