"""``lessor.aio.get(ctx, "etcd")``: the asyncio etcd lessor's factory, registered on import.

Found through the ``lessor.aio_backends`` entry point, so no import is needed. It reads the
same settings as the synchronous ``"etcd"`` factory (:class:`~lessor.etcd.settings.EtcdSettings`
on the ctx, else the environment) and keeps one :class:`AsyncEtcdLessor` per distinct settings
and running event loop: a lessor's connections belong to the loop it is used on.
"""

from __future__ import annotations

import asyncio
import threading

from lessor.aio.registry import register
from lessor.context import Context
from lessor.etcd.aio_lessor import AsyncEtcdLessor
from lessor.etcd.settings import EtcdSettings

__all__ = ["factory"]

_lessors: dict[tuple[EtcdSettings, asyncio.AbstractEventLoop], AsyncEtcdLessor] = {}
_lessors_lock = threading.Lock()


def factory(ctx: Context) -> AsyncEtcdLessor:
    """The asyncio lessor for the settings on ``ctx`` or, failing that, in the environment,
    on the running event loop: the same one for every call on that loop. Called while no loop
    runs, a new lessor, which belongs to the loop it is first used on."""
    settings = EtcdSettings.of(ctx)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        # No loop to key it by: a lessor of its own, which belongs to the loop it is first
        # used on. (Shared under "no loop", two threads' loops would get one lessor.)
        return AsyncEtcdLessor(**settings.arguments())
    with _lessors_lock:
        for key in [k for k in _lessors if k[1].is_closed()]:
            del _lessors[key]  # its loop is gone, and so are its connections
        lessor = _lessors.get((settings, loop))
        if lessor is None:
            lessor = _lessors[settings, loop] = AsyncEtcdLessor(**settings.arguments())
        return lessor


register("etcd", factory)
