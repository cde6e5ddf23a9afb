"""The threaded shell around the acquisition core: it performs the core's operations.

``core.py`` decides and yields operations (``ops.py``); :class:`Section` performs them for one
section over gRPC (``state.py``, ``leases.py``), on the calling thread, or on a thread of its
own for a :class:`~lessor.etcd.ops.CleanUp`. Nothing here decides anything: a failure of an
operation is thrown back into the core, which knows what it means.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from lessor.context import Context
from lessor.etcd import core
from lessor.etcd.gate import Gate
from lessor.etcd.keys import SectionKeys
from lessor.etcd.known import Known
from lessor.etcd.leases import LeasePool
from lessor.etcd.ops import (
    Check,
    CleanUp,
    DeleteMarker,
    ForgetLease,
    GiveBack,
    Op,
    Read,
    Steps,
    Swap,
    TakeLease,
    Tombstone,
    Wait,
)
from lessor.etcd.state import SectionTxns
from lessor.etcd.transport import Transport

__all__ = ["Section"]

log = logging.getLogger("lessor")


class Section:
    """What a lessor keeps per section: its Txns, what it knows of it, and its gate."""

    def __init__(self, transport: Transport, keys: SectionKeys, pool: LeasePool) -> None:
        self.txns = SectionTxns(transport, keys)
        self.known = Known(keys)
        self.gate: Gate[core.Member] = Gate(lambda m: m.settled)
        self._pool = pool

    @property
    def idle(self) -> bool:
        """Nobody acquires it and nothing of ours is pending on it: it may be forgotten."""
        return not self.gate.leading and self.known.idle

    def drive(self, steps: Steps) -> Any:
        """Perform ``steps``' operations until it ends; return what it returns. A failed
        operation is thrown into ``steps``, which handles it or lets it out."""
        result: Any = None
        error: BaseException | None = None
        while True:
            try:
                op = steps.send(result) if error is None else steps.throw(error)
            except StopIteration as end:
                return end.value
            result, error = None, None
            try:
                result = self._perform(op)
            except BaseException as e:  # the core decides what every failure means
                error = e

    def _perform(self, op: Op) -> Any:
        txns = self.txns
        if isinstance(op, Swap):
            return txns.swap(op.snapshot, op.live, op.relied, op.ours, op.timeout, drop=op.drop)
        if isinstance(op, Read):
            return txns.read(op.timeout)
        if isinstance(op, Check):
            return txns.check(op.snapshot, op.relied, op.timeout)
        if isinstance(op, TakeLease):
            return self._pool.take(op.until, op.timeout, op.what, users=op.users)
        if isinstance(op, GiveBack):
            return self._pool.give_back(op.lease, op.timeout)
        if isinstance(op, DeleteMarker):
            return txns.delete_marker(op.owner.lease, op.owner.seq, op.timeout)
        if isinstance(op, ForgetLease):
            return self._pool.forget(op.lease)
        if isinstance(op, Tombstone):
            return txns.abandon(op.owner.lease, op.owner.seq, op.timeout)
        if isinstance(op, Wait):
            ctx = op.wakes_on if isinstance(op.wakes_on, Context) else Context.background()
            ctx.wait(op.seconds)  # wakes early when the caller cancels
            return None
        if isinstance(op, CleanUp):
            threading.Thread(
                target=self._drive_quietly, args=(op.steps,), name="lessor clean-up", daemon=True
            ).start()
            return None
        raise TypeError(f"unknown operation {op!r}")

    def _drive_quietly(self, steps: Steps) -> None:
        try:
            self.drive(steps)
        except Exception:
            log.warning("section=%r: a clean-up failed", self.known.keys.section_id,
                        exc_info=True)  # fmt: skip
