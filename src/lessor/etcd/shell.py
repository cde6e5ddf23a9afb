"""The threaded shell around the acquisition core: it performs the core's operations.

The core (``core/``) decides and yields operations (``ops.py``); :class:`SectionShell` performs
them for one section over gRPC (``state.py``, ``leases.py``), on the calling thread, or on a
thread of its own for a :class:`~lessor.etcd.ops.CleanUp` (:class:`CleanUps` keeps those
threads, so that closing a lessor can wait for them). Nothing here decides anything: a failure
of an operation is thrown back into the core, which knows what it means.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from lessor.context import Context
from lessor.etcd import core
from lessor.etcd.calls import Calls, blocking, run
from lessor.etcd.drive import drive
from lessor.etcd.gate import Gate
from lessor.etcd.keys import SectionKeys
from lessor.etcd.known import Known
from lessor.etcd.leases import LeasePool
from lessor.etcd.op_calls import etcd_calls
from lessor.etcd.ops import (
    CleanUp,
    Op,
    Steps,
    Track,
    Wait,
    WaitTurn,
)
from lessor.etcd.reaper import Reaper, track
from lessor.etcd.state import SectionTxns
from lessor.etcd.transport import Transport

__all__ = ["CleanUps", "SectionShell"]

log = logging.getLogger("lessor")


class CleanUps:
    """The clean-up threads of one lessor: started on demand, waited for when it closes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[threading.Thread] = set()

    def start(self, run: Callable[[], None]) -> None:
        """Run ``run`` on a thread of its own; on this one if no thread can be started (the
        process is out of threads): a clean-up is never dropped."""

        def body() -> None:
            try:
                run()
            finally:
                with self._lock:
                    self._running.discard(threading.current_thread())

        thread = threading.Thread(target=body, name="lessor clean-up", daemon=True)
        with self._lock:
            self._running.add(thread)
        try:
            thread.start()
        except RuntimeError:  # "can't start new thread"
            with self._lock:
                self._running.discard(thread)
            run()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the running clean-ups; whether all ended."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                running = next(iter(self._running), None)
            if running is None:
                return True
            running.join(max(0.0, deadline - time.monotonic()))
            if running.is_alive():
                return False


class SectionShell:
    """What a lessor keeps per section: its Txns, what it knows of it, and its gate."""

    def __init__(
        self,
        transport: Transport,
        keys: SectionKeys,
        pool: LeasePool,
        *,
        reaper: Reaper | None = None,
        clean_ups: CleanUps | None = None,
    ) -> None:
        """``reaper`` ends grants still held at their deadlines (without one, as in tests of
        the core, an overrun ends at its release); ``clean_ups`` runs clean-ups (a lessor's
        sections share one)."""
        self.txns = SectionTxns(transport.rpc, keys)
        self._transport = transport
        self.known = Known(keys)
        self.gate: Gate[core.Member] = Gate(lambda m: m.settled)
        self._pool = pool
        self._reaper = reaper
        self._clean_ups = clean_ups if clean_ups is not None else CleanUps()
        self._handlers = self._handle()

    @property
    def idle(self) -> bool:
        """Nobody acquires it and nothing of ours is pending on it: it may be forgotten."""
        return not self.gate.leading and self.known.idle

    def drive(self, steps: Steps) -> Any:
        """Perform ``steps``' operations on this thread until it ends; return what it returns
        (:func:`lessor.etcd.drive.drive`: a failure, or an exception that reaches this thread
        between two operations, is thrown into ``steps``)."""
        return blocking(drive(steps, self._perform_now))

    async def _perform_now(self, op: Op) -> Any:  # never suspends: the operation blocks
        return self._handlers[type(op)](op)

    def perform(self, op: Op) -> Any:
        """Carry out one operation; its result, or its failure raised."""
        return self._handlers[type(op)](op)

    def _handle(self) -> dict[type, Callable[[Any], Any]]:
        calls, transport = etcd_calls(self.txns, self._pool), self._transport
        handlers: dict[type, Callable[[Any], Any]] = {
            kind: _through(transport, make) for kind, make in calls.items()
        }
        return handlers | {
            Track: self._track,
            Wait: self._wait,
            WaitTurn: lambda op: op.turn.wait(op.seconds),  # a threading.Event (lessor.py)
            CleanUp: self._clean_up,
        }

    @staticmethod
    def _wait(op: Wait) -> None:
        ctx = op.wakes_on if isinstance(op.wakes_on, Context) else Context.background()
        ctx.wait(op.seconds)  # wakes early when the caller cancels

    def _track(self, op: Track) -> None:
        track(op.helds, self._reaper)

    def _clean_up(self, op: CleanUp) -> None:
        steps = op.steps
        self._clean_ups.start(lambda: self._drive_quietly(steps))

    def _drive_quietly(self, steps: Steps) -> None:
        try:
            self.drive(steps)
        except Exception:
            log.warning("section=%r: a clean-up failed", self.known.keys.section_id,
                        exc_info=True)  # fmt: skip


def _through(transport: Transport, make: Callable[[Any], Calls[Any]]) -> Callable[[Any], Any]:
    """A handler that makes an operation's calls (``make(op)``) through ``transport``."""
    return lambda op: run(transport, make(op))
