"""``lessor.aio.get(ctx, "etcd")``: the asyncio etcd lessor's factory, registered on import.

Found through the ``lessor.aio_backends`` entry point, so no import is needed. It reads the
same settings as the synchronous ``"etcd"`` factory (:class:`~lessor.etcd.settings.EtcdSettings`
on the ctx, else the environment) and keeps one :class:`AsyncEtcdLessor` per distinct settings
and event loop: a lessor's connections belong to the loop it is used on.
"""

from __future__ import annotations

import asyncio
import threading

from lessor.aio.registry import register
from lessor.context import Context
from lessor.etcd.aio_lessor import AsyncEtcdLessor
from lessor.etcd.settings import EtcdSettings

__all__ = ["factory"]

_lessors: dict[tuple[EtcdSettings, asyncio.AbstractEventLoop | None], AsyncEtcdLessor] = {}
_lessors_lock = threading.Lock()


def factory(ctx: Context) -> AsyncEtcdLessor:
    """The asyncio lessor for the settings on ``ctx`` or, failing that, in the environment,
    on the running event loop (or for the loop it is first used on, if none runs)."""
    settings = EtcdSettings.of(ctx)
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    with _lessors_lock:
        for key in [k for k in _lessors if k[1] is not None and k[1].is_closed()]:
            del _lessors[key]  # its loop is gone, and so are its connections
        lessor = _lessors.get((settings, loop))
        if lessor is None:
            lessor = _lessors[settings, loop] = AsyncEtcdLessor(**settings.arguments())
        return lessor


register("etcd", factory)
