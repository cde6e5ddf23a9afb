"""When an etcd lessor may shut down: :class:`Usage`.

Closing a lessor refuses new acquisitions, but leases already held stay valid, and so do
acquisitions already under way (their grants are leases like any other). The lessor shuts
down (ends its clean-ups, revokes its idle etcd lease, closes its connections) when the last
of them has ended: at once when there is none.
"""

from __future__ import annotations

import threading

from lessor.errors import LessorError

__all__ = ["Usage"]


class Usage:
    """Acquisitions under way and grants not yet released, counted; and whether the lessor
    is closed. Each ``True`` this class returns tells exactly one caller to shut down."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._lock = threading.Lock()
        self._in_use = 0
        self._closed = False
        self._shut = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def in_use(self) -> int:
        return self._in_use

    def check_open(self) -> None:
        """Raise :class:`~lessor.errors.LessorError` if the lessor is closed."""
        if self._closed:
            raise LessorError(f"{self._what} is closed")

    def begin(self) -> None:
        """An acquisition begins; refused once the lessor is closed. Under the same lock as
        :meth:`close`: either close refuses it, or close sees it under way."""
        with self._lock:
            self.check_open()
            self._in_use += 1

    def end(self) -> bool:
        """An acquisition ended without a grant to release, or a grant was released. True
        when the lessor is closed and this was the last: the caller shuts it down."""
        with self._lock:
            self._in_use -= 1
            return self._closed and self._in_use == 0 and self._claim_shut()

    def close(self) -> bool:
        """Refuse new acquisitions. True when nothing is in use: the caller shuts down now."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            return self._in_use == 0 and self._claim_shut()

    def _claim_shut(self) -> bool:
        first, self._shut = not self._shut, True
        return first
