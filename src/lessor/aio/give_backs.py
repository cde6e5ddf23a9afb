"""The give-backs of one asyncio lessor under way: tasks that no cancel of a lease's task
reaches, and that :meth:`~lessor.aio.AsyncLessor.aclose` waits for.

A lease's task awaits its give-back through :func:`asyncio.shield`: a second cancel of that
task ends its wait, not the give-back. An acquisition whose caller went away is finished here
too, so that a grant it still returns is given back at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

from lessor.attached import attached

__all__ = ["GiveBacks", "give_backs"]


class GiveBacks:
    """Tasks giving grants back for one lessor, on any number of event loops."""

    __slots__ = ("_lock", "_tasks")

    def __init__(self) -> None:
        self._lock = threading.Lock()  # a lessor may serve loops in several threads
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, give_back: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``give_back`` as a task of its own on the running loop, kept until it ends."""
        task = asyncio.get_running_loop().create_task(give_back)
        with self._lock:
            self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[None]) -> None:
        with self._lock:
            self._tasks.discard(task)

    async def wait(self) -> None:
        """Return when no give-back is under way on the running loop (those begun meanwhile
        included). Give-backs on other loops are theirs to wait for."""
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                mine = [task for task in self._tasks if task.get_loop() is loop]
            if not mine:
                return
            await asyncio.wait(mine)


def give_backs(lessor: object) -> GiveBacks:
    """``lessor``'s give-backs, kept on it from the first (:mod:`lessor.attached`)."""
    return attached(lessor, "_lessor_aio_give_backs", GiveBacks, GiveBacks)
