"""The ``"etcd"`` lessor (see :mod:`lessor.etcd.lessor`).

Importing this module registers the id ``"etcd"``; ``lessor.get(ctx, "etcd")`` also finds it
through the ``lessor.backends`` entry point without an import. Nothing picks it unless that id
is named. Its asyncio counterpart, :class:`AsyncEtcdLessor` (loaded when first named), is
``lessor.aio.get(ctx, "etcd")``'s, registered by :mod:`lessor.etcd.aio` through the
``lessor.aio_backends`` entry point. Local etcds for tests and demos are in
:mod:`lessor.testing`: the names ``LocalEtcd``, ``LocalEtcdCluster`` and ``find_etcd_binary``
here are deprecated aliases, kept for one release, that load it only when asked for.
"""

from __future__ import annotations

import threading
import warnings
from typing import TYPE_CHECKING

from lessor.context import Context
from lessor.etcd.core import SectionFull
from lessor.etcd.keys import MAX_SECTION_ID_BYTES
from lessor.etcd.lessor import EtcdLessor
from lessor.etcd.plan import MAX_LIVE_LEASES
from lessor.etcd.settings import ENVIRONMENT, EtcdSettings
from lessor.registry import register

if TYPE_CHECKING:
    from lessor.etcd.aio_lessor import AsyncEtcdLessor

__all__ = [
    "ENVIRONMENT",
    "MAX_LIVE_LEASES",
    "MAX_SECTION_ID_BYTES",
    "AsyncEtcdLessor",
    "EtcdLessor",
    "EtcdSettings",
    "SectionFull",
    "factory",
]

_lessors: dict[EtcdSettings, EtcdLessor] = {}
_lessors_lock = threading.Lock()


def factory(ctx: Context) -> EtcdLessor:
    """The lessor for the settings on ``ctx`` or, failing that, in the environment.

    One lessor per distinct settings is kept for the process, so its connections, etcd
    lease and cached section states are shared by every caller.
    """
    settings = EtcdSettings.of(ctx)
    with _lessors_lock:
        lessor = _lessors.get(settings)
        if lessor is None:
            lessor = _lessors[settings] = EtcdLessor(**settings.arguments())
        return lessor


register("etcd", factory)

# Deprecated names (one release): where each lives now.
_MOVED = {
    "LocalEtcd": "lessor.testing.local",
    "LocalEtcdCluster": "lessor.testing.cluster",
    "find_etcd_binary": "lessor.testing.binary",
}


def __getattr__(name: str) -> object:
    if name == "AsyncEtcdLessor":  # loaded when asked for: it brings in grpc.aio and lessor.aio
        from lessor.etcd.aio_lessor import AsyncEtcdLessor  # noqa: PLC0415

        return AsyncEtcdLessor
    if name in _MOVED:
        import importlib  # noqa: PLC0415

        warnings.warn(
            f"lessor.etcd.{name} is deprecated: use lessor.testing.{name} ({_MOVED[name]})",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
