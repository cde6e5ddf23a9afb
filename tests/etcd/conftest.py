"""Helpers for the etcd tests that run lessor clients in child processes.

The ``spawn`` fixture starts ``lessor_child.py`` in a mode and hands back a :class:`Child`:
its stdout lines arrive on a queue (read by a thread), so the parent awaits them with a bound
instead of sleeping; its stderr goes to a file, shown when something fails. Every child is
killed by its pid and reaped at teardown, whatever the test did.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

CHILD = Path(__file__).with_name("lessor_child.py")


class Child:
    """One ``lessor_child.py`` process."""

    def __init__(self, name: str, mode: str, config: dict[str, Any], stderr_path: Path) -> None:
        self.name = name
        self.stderr_path = stderr_path
        self._stderr: IO[bytes] = stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), mode, json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )
        self.pid = self.proc.pid
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"{name} stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)  # end of output: the child exited or closed stdout

    def expect(self, timeout: float) -> str:
        """The next line the child prints; fails if none comes within ``timeout`` seconds."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"{self.name} printed nothing in {timeout}s; stderr:\n{self.stderr()}"
            ) from None
        if line is None:
            self._lines.put(None)
            raise AssertionError(
                f"{self.name} exited (status {self.proc.wait()}) instead of printing a line; "
                f"stderr:\n{self.stderr()}"
            )
        return line

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait(self, timeout: float) -> int:
        """The child's exit status; fails if it is still running after ``timeout`` seconds."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still running after {timeout}s; stderr:\n{self.stderr()}"
            ) from None

    def kill(self) -> int:
        """SIGKILL the child (by its pid) unless it has exited; reap it; its exit status."""
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait()

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def close(self) -> None:
        """Kill and reap the child, then release its pipes and files."""
        try:
            self.kill()
        finally:
            self._close(self.proc.stdin)
            self._reader.join(timeout=5)  # the child is gone: its stdout is at its end
            self._close(self.proc.stdout)
            self._stderr.close()

    @staticmethod
    def _close(stream: IO[str] | None) -> None:
        if stream is not None:
            with contextlib.suppress(OSError):  # a broken stdin pipe: the child is gone anyway
                stream.close()


Spawn = Callable[[str, str, dict[str, Any]], Child]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """``spawn(name, mode, config)``: a :class:`Child`; all are killed and reaped at teardown."""
    children: list[Child] = []

    def start(name: str, mode: str, config: dict[str, Any]) -> Child:
        stderr_path = tmp_path / f"{name.replace(' ', '-')}.stderr"
        child = Child(name, mode, config, stderr_path)
        children.append(child)
        return child

    try:
        yield start
    finally:
        errors: list[BaseException] = []
        for child in children:
            try:
                child.close()
            except BaseException as e:  # close the others first
                errors.append(e)
        leaked = [c.pid for c in children if c.proc.returncode is None]
        assert not leaked, f"child processes still running: {leaked}"
        if errors:
            raise errors[0]


_prefixes = itertools.count()


@pytest.fixture
def prefix() -> str:
    """A key prefix of its own for each test that shares the session's etcd."""
    return f"/t{next(_prefixes)}/"


@pytest.fixture
def client(etcd_server: Any) -> Iterator[Any]:
    """A pyetcd client to the session's etcd, to look at what the lessor stored."""
    # Imported here: the etcd3 client session must never load pyetcd (see test_etcd3_client).
    import pyetcd  # noqa: PLC0415

    host, port = etcd_server.endpoint.rsplit(":", 1)
    c = pyetcd.client(host=host, port=int(port), timeout=5)
    yield c
    c.close()
