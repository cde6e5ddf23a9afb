"""A program in a child process, driven through its stdin and stdout lines, and always reaped.

Tests run lessor clients in processes of their own so that they can SIGKILL or SIGSTOP one
while it holds a lease; the benchmark runs its load in worker processes; the datacenter tests
run agents, etcd members and workers inside network namespaces. All need the same handle:

* the program's stdout lines arrive on a queue, read by a thread, so the parent waits for each
  with a bound (:meth:`Child.expect`, :meth:`Child.expect_json`, :meth:`Child.expect_event`)
  instead of sleeping — or on a :data:`Sink` that several programs share;
* its stderr goes to a log file, shown when something fails (or to ours when no log is given);
* :meth:`Child.kill` SIGKILLs it by its pid and reaps it; :meth:`Child.close` ends its input,
  gives it ``grace`` seconds to exit, kills it, reaps it and releases its pipes and files;
* :class:`Children` closes every child it started, even when a test failed or one close
  raised, and fails if any of them still runs.

It lives in :mod:`lessor.testing`, not in the tests' own helpers, because ``benchmarks/bench.py``
runs as a script of its own (``python benchmarks/bench.py``, ``nox -s bench``) that imports the
installed ``lessor`` but cannot import the ``tests`` package; and because a user testing their
own code against etcd needs the same thing: a client process to kill while it holds a lease.
"""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self, TypeVar

__all__ = ["Child", "ChildError", "Children", "Sink"]

Sink = queue.Queue[tuple[str, str | None]]
"""Lines of several programs on one queue: ``(program name, line)``, ``(name, None)`` at the
end of a program's output."""


class ChildError(AssertionError):
    """A child did not say what was expected in time, or exited instead (a test failure)."""


class _Closes:
    """A context manager that calls ``close()`` at its end."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Child(_Closes):
    """One program, started at once; a context manager that closes it.

    ``argv`` runs as given (``[sys.executable, "program.py", ...]``, or wrapped, as in ``ip
    netns exec``). With ``lines`` (the default), its stdin is ours and its stdout lines are
    read by a thread, onto the child's own queue or onto ``sink``; without, its stdin is empty
    and its stdout goes to ``log`` too. ``log`` receives its stderr; without one, stderr is
    ours. ``new_session`` keeps a ^C at the terminal from reaching it, so the parent ends it in
    order.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log: Path | None = None,
        lines: bool = True,
        sink: Sink | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        new_session: bool = False,
    ) -> None:
        self.name = name
        self.log_path = log
        self.events: list[dict[str, Any]] = []  # every event :meth:`expect_event` read, in order
        self._sink = sink
        self._log: IO[bytes] | None = log.open("wb") if log is not None else None
        self._lines: queue.Queue[str | None] = queue.Queue()
        try:
            self.proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE if lines else subprocess.DEVNULL,
                stdout=subprocess.PIPE if lines else self._log,
                stderr=self._log,
                text=True,
                bufsize=1,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=new_session,
            )
        except BaseException:
            if self._log is not None:
                self._log.close()
            raise
        self.pid = self.proc.pid
        self._reader: threading.Thread | None = None
        if lines:
            self._reader = threading.Thread(target=self._read, name=f"{name} stdout", daemon=True)
            self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._put(line.rstrip("\n"))
        self._put(None)  # end of output: the program exited or closed its stdout

    def _put(self, line: str | None) -> None:
        if self._sink is not None:
            self._sink.put((self.name, line))
        else:
            self._lines.put(line)

    # -- talking to it -------------------------------------------------------------------------

    def expect(self, timeout: float) -> str:
        """The next line the program prints; fails if none comes within ``timeout`` seconds or
        it exits first (not for a program whose lines go to a sink)."""
        assert self._sink is None, f"{self.name}'s lines go to a sink"
        try:
            line = self._lines.get(timeout=max(0.0, timeout))
        except queue.Empty:
            raise ChildError(
                f"{self.name} printed nothing in {timeout:g}s; log:\n{self.log_tail()}"
            ) from None
        if line is None:
            self._lines.put(None)
            raise ChildError(
                f"{self.name} exited (status {self.proc.wait()}) instead of printing a line; "
                f"log:\n{self.log_tail()}"
            )
        return line

    def expect_json(self, timeout: float) -> dict[str, Any]:
        """The next line, a JSON object."""
        line = self.expect(timeout)
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            raise ChildError(f"{self.name} printed {line!r}, not JSON") from None
        if not isinstance(value, dict):
            raise ChildError(f"{self.name} printed {line!r}, not a JSON object")
        return value

    def expect_event(
        self, event: str, timeout: float, *, skip: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """The next JSON line, which must be ``{"event": event, ...}``; events named in
        ``skip`` are passed over. Every event read is kept in :attr:`events`."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.expect_json(deadline - time.monotonic())
            self.events.append(got)
            if got.get("event") in skip:
                continue
            if got.get("event") != event:
                raise ChildError(f"{self.name}: expected {event!r}, got {got}")
            return got

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None, f"{self.name} has no stdin"
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def send_json(self, message: Mapping[str, Any]) -> None:
        self.send(json.dumps(message))

    def log_text(self) -> str:
        """What the program wrote to its log so far."""
        if self._log is None or self.log_path is None:
            return "(not logged: it went to our stderr)"
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- its end -------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the program by its pid, unless it has been reaped."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """The program's exit status; fails if it still runs after ``timeout`` seconds."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ChildError(
                f"{self.name} still running after {timeout:g}s; log:\n{self.log_tail()}"
            ) from None

    def kill(self) -> int:
        """SIGKILL the program (by its pid) unless it has exited; reap it; its exit status."""
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait()

    def close(self, grace: float = 0.0) -> None:
        """With ``grace``, end its input (a program that reads it exits then) and give it up
        to ``grace`` seconds to exit; then SIGKILL it, reap it, and release its pipes and log.
        Without, it is killed before its input ends: it has no chance to act on the end."""
        try:
            if grace > 0:
                self._close_stdin()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(grace)
        finally:
            self.kill()
            self._close_stdin()
            if self._reader is not None:
                self._reader.join(timeout=5)  # the program is gone: its stdout is at its end
            if self.proc.stdout is not None:
                with contextlib.suppress(OSError):
                    self.proc.stdout.close()
            if self._log is not None:
                self._log.close()

    def _close_stdin(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):  # a broken pipe: the program is gone anyway
                self.proc.stdin.close()

    def __repr__(self) -> str:
        return f"<Child {self.name!r} pid {self.pid}>"


_C = TypeVar("_C", bound=Child)


class Children(_Closes):
    """The children a test (or a run) started; a context manager that closes them all.

    :meth:`close` closes each (``grace`` seconds each, as :meth:`Child.close`) even when one
    of them raises, then fails if any still runs; the first error is raised after all are
    closed."""

    def __init__(self, grace: float = 0.0) -> None:
        self.grace = grace
        self.started: list[Child] = []

    def start(self, name: str, argv: Sequence[str], **options: Any) -> Child:
        """A :class:`Child` (``options`` as for it), closed with the others."""
        return self.add(Child(name, argv, **options))

    def add(self, child: _C) -> _C:
        """``child`` (of a subclass of :class:`Child`, say), closed with the others."""
        self.started.append(child)
        return child

    def __iter__(self) -> Iterator[Child]:
        return iter(self.started)

    def __len__(self) -> int:
        return len(self.started)

    def __getitem__(self, index: int) -> Child:
        return self.started[index]

    def close(self) -> None:
        errors: list[BaseException] = []
        for child in self.started:
            try:
                child.close(self.grace)
            except BaseException as e:  # close the others first
                errors.append(e)
        leaked = [c.pid for c in self.started if c.proc.returncode is None]
        if leaked:
            errors.insert(0, ChildError(f"child processes still running: {leaked}"))
        if errors:
            raise errors[0]
