"""What an etcd lessor keeps per section, and how long: :class:`Sections`.

Each section an etcd lessor acquires in has a shell (its Txns, what the process knows of it,
its gate: ``shell.py``, ``aio_shell.py``). A lessor keeps the shells of at most
:data:`MAX_CACHED_SECTIONS` sections; past that, the least recently used idle one is forgotten
(its next acquisition reads the section afresh). A section that is being acquired, or has
abandoned acquisitions to clean up, is never idle, so it stays.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar

__all__ = ["MAX_CACHED_SECTIONS", "Sections"]

MAX_CACHED_SECTIONS = 1024
"""Sections whose state a lessor keeps."""


class _Shell(Protocol):
    @property
    def idle(self) -> bool: ...


S = TypeVar("S", bound=_Shell)


class Sections(Generic[S]):
    """The shells of a lessor's sections, made by ``make(section_id)`` on first use.

    ``lock`` is the lessor's: :meth:`get` and :meth:`evict` are called with it held, so that
    an acquisition joins its section's gate before any eviction can look at the section.
    """

    def __init__(self, make: Callable[[str], S], lock: threading.Lock) -> None:
        self._make = make
        self.lock = lock
        self._shells: OrderedDict[str, S] = OrderedDict()

    def get(self, section_id: str) -> S:
        """The section's shell, made if need be (with :attr:`lock` held)."""
        shell = self._shells.get(section_id)
        if shell is None:
            shell = self._shells[section_id] = self._make(section_id)
        else:
            self._shells.move_to_end(section_id)
        return shell

    def evict(self) -> None:
        """Forget idle sections past :data:`MAX_CACHED_SECTIONS`, least recently used first
        (with :attr:`lock` held)."""
        excess = len(self._shells) - MAX_CACHED_SECTIONS
        if excess <= 0:
            return
        idle = itertools.islice(
            (section_id for section_id, shell in self._shells.items() if shell.idle),
            excess,  # stop at the first few: this runs under the lessor's lock
        )
        for section_id in list(idle):
            del self._shells[section_id]

    def __len__(self) -> int:
        return len(self._shells)

    def __getitem__(self, section_id: str) -> S:
        return self._shells[section_id]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._shells))
