"""The demo's worker processes, as the demo sees them: started, followed, stopped.

Each worker (:mod:`lessor.demo.worker`) is started by :func:`start` in a session of its own,
so that Ctrl-C reaches the demo only, and the demo stops everyone: :func:`stop` sends SIGTERM
when asked to be graceful (a worker then gives its leases back) and SIGKILLs whatever is left.
A worker's output goes to a log file of its own, whose last lines (:meth:`Worker.tail`) the
demo shows when a worker fails. A worker the demo kills on purpose, as a fault, is marked
``killed``: its exit is no problem of the run.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Worker", "start", "stop", "tails"]

STOP_SECONDS = 10.0  # how long a graceful stop waits for the workers before SIGKILL


@dataclass(slots=True)
class Worker:
    """A worker process the demo started: its datacenter, its name, the process, its log."""

    dc: str
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    killed: bool = False  # by the demo, on purpose

    def tail(self, lines: int = 5) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


def start(dc: str, name: str, command: Sequence[str], log: Path, env: Mapping[str, str]) -> Worker:
    """Start one worker process, its output to ``log``, in a session of its own."""
    with open(log, "wb") as f:
        # A session of its own: Ctrl-C reaches the demo only, which stops everyone.
        process = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=True)  # fmt: skip
    return Worker(dc, name, process, log)


def tails(workers: Sequence[Worker]) -> str:
    """The last lines of every worker's log, each under its name."""
    return "\n".join(f"--- {w.dc}/{w.name}:\n{w.tail()}" for w in workers)


def stop(workers: Sequence[Worker], *, graceful: bool) -> None:
    """SIGTERM (when ``graceful``: they give their leases back), then SIGKILL the rest."""
    alive = [w for w in workers if w.process.poll() is None]
    if graceful:
        for w in alive:
            w.process.terminate()
        deadline = time.monotonic() + STOP_SECONDS
        for w in alive:
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.process.wait(max(0.0, deadline - time.monotonic()))
    for w in alive:
        if w.process.poll() is None:
            w.process.kill()
            w.process.wait()
