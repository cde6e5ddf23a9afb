"""The polling back-off of the default :meth:`~lessor.contract.Lessor._wait_free`.

A third-party backend that cannot observe its holders gets a ``wait_free`` that waits an
interval and says "worth trying again". The interval starts at :data:`WAIT_FREE_FIRST` seconds
and doubles on consecutive calls for the same section (a call that starts within
:data:`WAIT_FREE_MAX` seconds of the end of the previous one's interval), up to
:data:`WAIT_FREE_MAX`. Each lessor remembers the intervals of its 1024 most recently waited
sections. :mod:`lessor.contract` re-exports both constants.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from lessor.attached import attached

__all__ = ["WAIT_FREE_FIRST", "WAIT_FREE_MAX", "Backoff", "backoffs"]

WAIT_FREE_FIRST = 0.05
"""Seconds the default ``_wait_free`` waits on a first call for a section."""

WAIT_FREE_MAX = 2.0
"""The longest interval of the default ``_wait_free``, in seconds."""

_BACKOFF_SECTIONS = 1024
"""Sections whose back-off the default ``_wait_free`` remembers, per lessor."""


class Backoff:
    """The default ``_wait_free``'s intervals per section: least recently used ones go first."""

    __slots__ = ("_lock", "_sections")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # section id -> (last interval, when it ends)
        self._sections: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def next_interval(self, section_id: str) -> float:
        now = time.monotonic()
        with self._lock:
            last = self._sections.pop(section_id, None)
            if last is not None and now - last[1] <= WAIT_FREE_MAX:
                interval = min(last[0] * 2, WAIT_FREE_MAX)
            else:
                interval = WAIT_FREE_FIRST
            self._sections[section_id] = (interval, now + interval)
            while len(self._sections) > _BACKOFF_SECTIONS:
                self._sections.popitem(last=False)
        return interval


def backoffs(lessor: object) -> Backoff:
    """``lessor``'s back-off state, made on first need (:mod:`lessor.attached`)."""
    return attached(lessor, "_lessor_wait_free_backoff", Backoff, Backoff)
