"""``threading`` as a module under test sees it when the process is out of threads."""

from __future__ import annotations

import threading
from typing import Any


class ThreadsExhausted:
    """Stands for the ``threading`` module: its next ``failures`` ``Thread.start`` calls fail as
    CPython's does when no thread can be created (RLIMIT_NPROC, memory). Monkeypatch it in as
    the module's ``threading``."""

    def __init__(self, failures: int = 1) -> None:
        self.failures = failures
        outer = self

        class Thread(threading.Thread):
            def start(self) -> None:
                if outer.failures > 0:
                    outer.failures -= 1
                    raise RuntimeError("can't start new thread")
                super().start()

        self.Thread = Thread

    def __getattr__(self, name: str) -> Any:
        return getattr(threading, name)
