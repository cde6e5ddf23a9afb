"""The ``"etcd"`` lessor (see :mod:`lessor.etcd.lessor`).

Importing this module registers the id ``"etcd"``; ``lessor.get(ctx, "etcd")`` also finds it
through the ``lessor.backends`` entry point without an import. Nothing picks it unless that id
is named. Local etcds for tests and demos are in :mod:`lessor.testing`: the names
``LocalEtcd``, ``LocalEtcdCluster`` and ``find_etcd_binary`` here are deprecated aliases, kept
for one release, that load it only when asked for.
"""

from __future__ import annotations

import threading
import warnings

from lessor.context import Context
from lessor.etcd.core import SectionFull
from lessor.etcd.keys import MAX_SECTION_ID_BYTES
from lessor.etcd.lessor import EtcdLessor
from lessor.etcd.plan import MAX_LIVE_LEASES
from lessor.etcd.settings import ENVIRONMENT, EtcdSettings
from lessor.registry import register

__all__ = [
    "ENVIRONMENT",
    "MAX_LIVE_LEASES",
    "MAX_SECTION_ID_BYTES",
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
    settings = ctx.value(EtcdSettings)
    if settings is None:
        settings = EtcdSettings.from_environment()
    elif not isinstance(settings, EtcdSettings):
        raise TypeError(f"ctx value for EtcdSettings must be one, got a {type(settings).__name__}")
    with _lessors_lock:
        lessor = _lessors.get(settings)
        if lessor is None:
            lessor = EtcdLessor(
                list(settings.endpoints),
                prefix=settings.prefix,
                holder=settings.holder,
                ca_cert=settings.ca_cert,
                cert_cert=settings.cert_cert,
                cert_key=settings.cert_key,
                user=settings.user,
                password=settings.password,
            )
            _lessors[settings] = lessor
        return lessor


register("etcd", factory)

# Deprecated names (one release): where each lives now.
_MOVED = {
    "LocalEtcd": "lessor.testing.local",
    "LocalEtcdCluster": "lessor.testing.cluster",
    "find_etcd_binary": "lessor.testing.binary",
}


def __getattr__(name: str) -> object:
    if name in _MOVED:
        import importlib  # noqa: PLC0415

        warnings.warn(
            f"lessor.etcd.{name} is deprecated: use lessor.testing.{name} ({_MOVED[name]})",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
