"""First come, first served: one acquisition per section at a time within a process.

Every acquisition of a section swaps the same etcd key, so two threads of one process that
swap it at once make one of them fail for nothing, and a thread that keeps losing can starve
while luckier ones keep winning. The gate lines a process's acquisitions of one section up in
arrival order; only the one at the head talks to etcd. It also keeps the process's cached
state of the section current, since the previous writer is usually the process itself.

The gate spans only the acquisition, never the callback: holders run concurrently.
"""

from __future__ import annotations

import threading
from collections import deque

from lessor.context import Context

__all__ = ["Gate"]


class Gate:
    """A FIFO mutex whose waiters give up when their context is done."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy = False
        self._waiters: deque[threading.Event] = deque()

    def enter(self, ctx: Context) -> None:
        """Wait for our turn; raises the context's error if it ends first."""
        with self._lock:
            if not self._busy:
                self._busy = True
                return
            turn = threading.Event()
            self._waiters.append(turn)
        while not turn.is_set():
            if ctx.done():
                with self._lock:
                    if turn.is_set():  # handed over just now: pass it on
                        self._hand_over()
                    else:
                        self._waiters.remove(turn)
                ctx.raise_if_done()
            # Bounded waits so that a cancellation (which has no event of ours) is noticed too.
            turn.wait(min(ctx.remaining(), 0.1))

    def leave(self) -> None:
        with self._lock:
            self._hand_over()

    def _hand_over(self) -> None:
        if self._waiters:
            self._waiters.popleft().set()  # still busy: the turn passes
        else:
            self._busy = False
