"""Lessors by id: ``register`` at import time, ``get`` when needed.

Besides :func:`register`, a backend can be found through the ``lessor.backends`` entry-point
group, so ``get(ctx, "etcd")`` works without importing ``lessor.etcd`` first. An entry point
names either the factory itself or a module that calls :func:`register` when imported.

The mechanism is :class:`Registry`, one per kind of lessor: this module's functions are the
sync lessors' (:class:`~lessor.contract.Lessor`, group ``lessor.backends``);
:mod:`lessor.aio.registry` has the asyncio lessors' (group ``lessor.aio_backends``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar

from lessor.context import Context
from lessor.contract import Lessor
from lessor.errors import LessorNotRegistered

__all__ = ["ENTRY_POINT_GROUP", "Factory", "Registry", "get", "register", "registered"]

L = TypeVar("L")


class Registry(Generic[L]):
    """Factories of one kind of lessor by id: registered ones, and those an installed
    distribution names in the entry-point group ``group``.

    ``kind`` is the class every lessor built must be an instance of (``kind_name`` its public
    name), ``noun`` what errors call one ("lessor"). The factories live in the dict
    ``table()`` returns, so that a module can keep its own (and a test swap in a copy).
    """

    def __init__(
        self,
        group: str,
        kind: type,
        kind_name: str,
        noun: str,
        table: Callable[[], dict[str, Callable[[Context], L]]],
    ) -> None:
        self.group = group
        self._kind = kind
        self._kind_name = kind_name
        self._noun = noun
        self._table = table
        self._lock = threading.RLock()

    def register(self, id: str, factory: Callable[[Context], L]) -> None:
        """Register ``factory`` under ``id``; meant for import time. A taken id is an error."""
        if not isinstance(id, str) or not id:
            raise ValueError(f"{self._noun} id must be a non-empty str, got {id!r}")
        if not callable(factory):
            raise TypeError(f"{self._noun} factory for {id!r} must be callable, got {factory!r}")
        with self._lock:
            factories = self._table()
            if id in factories:
                raise ValueError(f"{self._noun} {id!r} is already registered")
            factories[id] = factory

    def get(self, ctx: Context, id: str) -> L:
        """The lessor registered under ``id``, built by its factory with ``ctx``."""
        if not isinstance(ctx, Context):
            raise TypeError(f"ctx must be a lessor.Context, got {ctx!r}")
        with self._lock:
            factory = self._table().get(id)
            if factory is None:
                factory = self._load_entry_point(id)
        if factory is None:
            known = ", ".join(repr(i) for i in self.registered()) or "none"
            raise LessorNotRegistered(f"no {self._noun} registered as {id!r} (registered: {known})")
        lessor = factory(ctx)
        if not isinstance(lessor, self._kind):
            raise TypeError(
                f"the factory of {self._noun} {id!r} returned {lessor!r}, not a {self._kind_name}"
            )
        return lessor

    def registered(self) -> list[str]:
        """Ids that :meth:`get` can resolve: registered ones and installed entry points."""
        with self._lock:
            ids = set(self._table())
        ids.update(ep.name for ep in self._entry_points())
        return sorted(ids)

    def _entry_points(self) -> list[EntryPoint]:
        return list(entry_points(group=self.group))

    def _load_entry_point(self, id: str) -> Callable[[Context], L] | None:
        for ep in self._entry_points():
            if ep.name != id:
                continue
            loaded = ep.load()  # may register id itself, as modules do at import time
            factories = self._table()
            if id not in factories:
                if not callable(loaded):
                    raise TypeError(
                        f"entry point {ep.value!r} for {self._noun} {id!r} is not callable "
                        "and did not register a factory when loaded"
                    )
                factories[id] = loaded
            return factories[id]
        return None


ENTRY_POINT_GROUP = "lessor.backends"

Factory = Callable[[Context], Lessor]
"""``factory(ctx) -> Lessor``: builds (or returns a shared) lessor; may read settings from ctx."""

_factories: dict[str, Factory] = {}

_lessors: Registry[Lessor] = Registry(
    ENTRY_POINT_GROUP, Lessor, "lessor.Lessor", "lessor", lambda: _factories
)

register = _lessors.register
get = _lessors.get
registered = _lessors.registered
