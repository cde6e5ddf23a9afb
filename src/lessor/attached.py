"""State the library keeps on an object it did not construct, such as a backend's lessor.

A backend need not call our ``__init__`` (a frozen dataclass's does not), so state that the
base classes keep per lessor is made on first need and set with ``object.__setattr__``, which
also works on a frozen dataclass. This module is internal.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["attached"]

T = TypeVar("T")

_lock = threading.Lock()


def attached(owner: object, attr: str, kind: type[T], make: Callable[[], T]) -> T:
    """The ``kind`` kept on ``owner`` under ``attr``, made by ``make()`` on first need (once,
    whichever thread needs it first)."""
    state = getattr(owner, attr, None)
    if state is None:
        with _lock:
            state = getattr(owner, attr, None)
            if state is None:
                state = make()
                object.__setattr__(owner, attr, state)
    assert isinstance(state, kind)
    return state
