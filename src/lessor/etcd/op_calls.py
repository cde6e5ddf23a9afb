"""What each of the core's etcd operations is, in calls to etcd.

The acquisition core yields operations (``ops.py``); those that talk to etcd become calls
(``calls.py``) of a section's Txns (``state.py``) or of the lessor's lease pool
(``leases.py``), the same for the threaded shell (``shell.py``) and the asyncio one
(``aio_shell.py``): each makes the calls its own way, and that is all that differs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lessor.etcd.calls import Calls
from lessor.etcd.leases import LeasePool
from lessor.etcd.ops import (
    Check,
    DeleteMarker,
    DeleteMarkers,
    DropTurn,
    GiveBack,
    Read,
    RetireLease,
    Swap,
    TakeLease,
    Tombstone,
)
from lessor.etcd.state import SectionTxns

__all__ = ["etcd_calls"]


def etcd_calls(txns: SectionTxns, pool: LeasePool) -> dict[type, Callable[[Any], Calls[Any]]]:
    """For each kind of operation that talks to etcd, the calls that perform one."""
    return {
        Swap: lambda op: txns.swap(
            op.snapshot,
            op.live,
            op.relied,
            op.ours,
            op.timeout,
            drop=op.drop,
            turn=op.turn,
            claim=op.claim,
            released=op.released,
        ),
        Read: lambda op: txns.read(op.timeout),
        Check: lambda op: txns.check(op.snapshot, op.relied, op.timeout),
        TakeLease: lambda op: pool.take(op.until, op.timeout, op.what, users=op.users),
        GiveBack: lambda op: pool.give_back(op.lease, op.timeout),
        DeleteMarker: lambda op: txns.delete_marker(op.owner.lease, op.owner.seq, op.timeout),
        DeleteMarkers: lambda op: txns.delete_markers(op.owners, op.timeout),
        DropTurn: lambda op: txns.drop_turn(op.create_revision, op.lease, op.timeout),
        RetireLease: lambda op: pool.retire(op.lease, op.timeout),
        Tombstone: lambda op: txns.abandon(op.owner.lease, op.owner.seq, op.timeout),
    }
