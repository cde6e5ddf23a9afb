"""Lease ranges of a key space to cooperating workers.

A Python rendering of the ``lessor`` and ``partition`` packages of LUCI's transactional task
queue, with backends ``"memory"`` (in-process) and ``"etcd"``. Start with :func:`get` and
:meth:`Lessor.lease`; the contract is in :mod:`lessor.contract`.
"""

from lessor import memory as _memory  # noqa: F401  (registers "memory")
from lessor.context import Context
from lessor.contract import Grant, Lease, LeaseScope, Lessor, WithLeaseCB, fencing_token
from lessor.errors import (
    Cancelled,
    ContextError,
    CorruptSection,
    DeadlineExceeded,
    LessorError,
    LessorNotRegistered,
    PermissionDenied,
    Transient,
    Unavailable,
)
from lessor.memory import MemoryLessor
from lessor.partition import Partition, SortedPartitions, SortedPartitionsBuilder
from lessor.registry import get, register, registered
from lessor.sweep import ShardReport, Sweeper, SweepStats

__all__ = [
    "Cancelled",
    "Context",
    "ContextError",
    "CorruptSection",
    "DeadlineExceeded",
    "Grant",
    "Lease",
    "LeaseScope",
    "Lessor",
    "LessorError",
    "LessorNotRegistered",
    "MemoryLessor",
    "Partition",
    "PermissionDenied",
    "ShardReport",
    "SortedPartitions",
    "SortedPartitionsBuilder",
    "SweepStats",
    "Sweeper",
    "Transient",
    "Unavailable",
    "WithLeaseCB",
    "fencing_token",
    "get",
    "register",
    "registered",
]
