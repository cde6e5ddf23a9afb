"""Leases for asyncio programs: the :mod:`lessor` contract, with deadlines enforced.

Start with :func:`get` (``lessor.aio.get(ctx, "memory")`` or ``"etcd"``, the same ids and
settings as :func:`lessor.get`) and ``async with lessors.lease(...) as lease:``; the contract
is in :mod:`lessor.aio.contract`. A :class:`lessor.Context` works in both worlds: cancel it
from any thread and the lease bodies under it are cancelled.
"""

from lessor.aio import memory as _memory  # noqa: F401  (registers "memory")
from lessor.aio.contract import AsyncLessor, AsyncWithLeaseCB
from lessor.aio.lease import AsyncLeaseScope
from lessor.aio.memory import AsyncMemoryLessor
from lessor.aio.registry import get, register, registered
from lessor.aio.sweep import Sweeper
from lessor.aio.wait import wait

__all__ = [
    "AsyncLeaseScope",
    "AsyncLessor",
    "AsyncMemoryLessor",
    "AsyncWithLeaseCB",
    "Sweeper",
    "get",
    "register",
    "registered",
    "wait",
]
