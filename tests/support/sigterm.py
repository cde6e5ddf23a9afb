"""A SIGTERM ends a test run as Ctrl-C does: fixtures are torn down, so every etcd member,
proxy and child process a fixture started is stopped. (By default a SIGTERM ends pytest at
once, and what its fixtures started lives on: three etcd members ran for an hour so.)

Installed by ``tests/conftest.py``; a pytest plugin too (``-p tests.support.sigterm``).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import pytest

__all__ = ["install"]


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}: ending the test run")


def install() -> None:
    """Turn SIGTERM into KeyboardInterrupt, unless something else already handles it."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


def pytest_configure(config: pytest.Config) -> None:
    install()
