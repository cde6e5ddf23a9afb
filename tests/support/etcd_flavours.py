"""The etcd lessor in its two flavours, for the etcd tests that must hold for both.

A flavour is a way to build an etcd lessor with :class:`~lessor.etcd.EtcdLessor`'s arguments:
``"sync"`` builds an ``EtcdLessor``; ``"aio"`` builds an :class:`~lessor.etcd.AsyncEtcdLessor`
on an event loop of its own and drives it through the sync interface
(:class:`SyncOverAsyncEtcd`), so that a test written against ``EtcdLessor`` runs unchanged
against the asyncio lessor: the same calls, the same bounds. The ``flavour`` fixture
(``tests/etcd/conftest.py``) parametrizes a test with both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lessor.etcd import EtcdLessor
from lessor.etcd.aio_lessor import AsyncEtcdLessor
from tests.support.sync_over_aio import SyncOverAio

__all__ = ["FLAVOURS", "Flavour", "SyncOverAsyncEtcd", "flavour"]

FLAVOURS = ("sync", "aio")


class SyncOverAsyncEtcd(SyncOverAio[AsyncEtcdLessor]):
    """An ``AsyncEtcdLessor`` as a sync lessor, with what the etcd tests use of an
    ``EtcdLessor`` beyond the contract."""

    @property
    def endpoint(self) -> str:
        """The etcd endpoint its calls go to now (``EtcdLessor.endpoint``)."""
        return self.aio.endpoint


Flavour = Callable[..., EtcdLessor | SyncOverAsyncEtcd]
"""``make(endpoints, **options)``: a lessor of one flavour; the caller closes it."""


def flavour(name: str) -> Flavour:
    """The lessor maker of flavour ``name`` (one of :data:`FLAVOURS`)."""

    def sync(endpoints: Sequence[str] | None = None, **options: Any) -> EtcdLessor:
        return EtcdLessor(endpoints, **options)

    def aio(endpoints: Sequence[str] | None = None, **options: Any) -> SyncOverAsyncEtcd:
        return SyncOverAsyncEtcd(lambda: AsyncEtcdLessor(endpoints, **options))

    makers: dict[str, Flavour] = {"sync": sync, "aio": aio}
    if name not in makers:
        raise ValueError(f"no etcd lessor flavour {name!r}: one of {FLAVOURS}")
    return makers[name]
