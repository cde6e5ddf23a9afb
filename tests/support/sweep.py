"""Doubles for the sweep tests, in memory (``tests/test_sweep.py``) and on etcd
(``tests/etcd/test_sweep.py``)."""

from __future__ import annotations

import random
import threading
from typing import Any

from lessor import Context, Lessor, Partition


class CountsCalls(Lessor):
    """A mixin before a lessor class: counts the calls of wait_free (``calls``), so a test can
    await the n-th, and those of is_held (``looks``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0
        self.looks = 0
        self._called = threading.Condition()

    def is_held(self, ctx: Context, section_id: str, part: Partition) -> bool:
        with self._called:
            self.looks += 1
        return super().is_held(ctx, section_id, part)

    def wait_free(self, ctx: Context, section_id: str, part: Partition) -> bool:
        with self._called:
            self.calls += 1
            self._called.notify_all()
        return super().wait_free(ctx, section_id, part)

    def await_calls(self, n: int, timeout: float = 60.0) -> bool:
        with self._called:
            return self._called.wait_for(lambda: self.calls >= n, timeout=timeout)


class FirstShardFirst(random.Random):
    """Rounds start at the first shard."""

    def randrange(self, *args: Any, **kwargs: Any) -> int:
        return 0
