"""Lessors by id: ``register`` at import time, ``get`` when needed.

Besides :func:`register`, a backend can be found through the ``lessor.backends`` entry-point
group, so ``get(ctx, "etcd")`` works without importing ``lessor.etcd`` first. An entry point
names either the factory itself or a module that calls :func:`register` when imported.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points

from lessor.context import Context
from lessor.contract import Lessor
from lessor.errors import LessorNotRegistered

__all__ = ["ENTRY_POINT_GROUP", "Factory", "get", "register", "registered"]

ENTRY_POINT_GROUP = "lessor.backends"

Factory = Callable[[Context], Lessor]
"""``factory(ctx) -> Lessor``: builds (or returns a shared) lessor; may read settings from ctx."""

_lock = threading.RLock()
_factories: dict[str, Factory] = {}


def register(id: str, factory: Factory) -> None:
    """Register ``factory`` under ``id``; meant for import time. A taken id is an error."""
    if not isinstance(id, str) or not id:
        raise ValueError(f"lessor id must be a non-empty str, got {id!r}")
    if not callable(factory):
        raise TypeError(f"lessor factory for {id!r} must be callable, got {factory!r}")
    with _lock:
        if id in _factories:
            raise ValueError(f"lessor {id!r} is already registered")
        _factories[id] = factory


def get(ctx: Context, id: str) -> Lessor:
    """The lessor registered under ``id``, built by its factory with ``ctx``."""
    if not isinstance(ctx, Context):
        raise TypeError(f"ctx must be a lessor.Context, got {ctx!r}")
    with _lock:
        factory = _factories.get(id)
        if factory is None:
            factory = _load_entry_point(id)
    if factory is None:
        known = ", ".join(repr(i) for i in registered()) or "none"
        raise LessorNotRegistered(f"no lessor registered as {id!r} (registered: {known})")
    lessor = factory(ctx)
    if not isinstance(lessor, Lessor):
        raise TypeError(f"the factory of lessor {id!r} returned {lessor!r}, not a lessor.Lessor")
    return lessor


def registered() -> list[str]:
    """Ids that :func:`get` can resolve: registered ones and installed entry points."""
    with _lock:
        ids = set(_factories)
    ids.update(ep.name for ep in _entry_points())
    return sorted(ids)


def _entry_points() -> list[EntryPoint]:
    return list(entry_points(group=ENTRY_POINT_GROUP))


def _load_entry_point(id: str) -> Factory | None:
    for ep in _entry_points():
        if ep.name != id:
            continue
        loaded = ep.load()  # may register id itself, as modules do at import time
        if id not in _factories:
            if not callable(loaded):
                raise TypeError(
                    f"entry point {ep.value!r} for lessor {id!r} is not callable "
                    "and did not register a factory when loaded"
                )
            _factories[id] = loaded
        return _factories[id]
    return None
