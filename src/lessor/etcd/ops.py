"""What the acquisition core asks its shell to do: the operations it yields.

The core (``core/``) decides; it never calls etcd, sleeps or starts a thread. Its generators
yield one of these and receive the result (or have the failure thrown into them), the way h11
and h2 keep protocol logic apart from sockets. A shell performs them: the threaded one in
``shell.py`` over gRPC, and the model-based tests against an in-memory etcd.

Txn operations carry the ``timeout`` the core allows them; what each Txn compares and returns
is in ``state.py``.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from lessor.etcd import section
from lessor.etcd.keys import Owner
from lessor.etcd.leases import EtcdLease
from lessor.etcd.state import Snapshot

__all__ = [
    "Check",
    "CleanUp",
    "DeleteMarker",
    "DeleteMarkers",
    "DropTurn",
    "GiveBack",
    "Op",
    "Read",
    "RetireLease",
    "Steps",
    "Swap",
    "TakeLease",
    "Tombstone",
    "Track",
    "Wait",
    "WaitTurn",
]


@dataclass(frozen=True, slots=True)
class Read:
    """Read the section (value and markers at one revision). Result: a :class:`Snapshot`."""

    timeout: float


@dataclass(frozen=True, slots=True)
class Check:
    """Confirm ``snapshot`` still holds for the entries ``relied`` on, writing nothing.
    Result: ``(state now, held)``."""

    snapshot: Snapshot
    relied: Sequence[section.Entry]
    timeout: float


@dataclass(frozen=True, slots=True)
class Swap:
    """Write ``ours`` beside ``live`` if ``snapshot`` and ``relied`` still hold and the turn
    key is as ``turn`` says (``turn.py``), deleting the markers of ``drop``; ``claim`` (this
    process's swaps' round trip, or None): claim the turn if the swap fails. Delete the
    markers of ``released`` either way (releases riding the swap: ``gate.py``). Result:
    ``(state written or state now, written)``."""

    snapshot: Snapshot
    live: Sequence[section.Entry]
    relied: Sequence[section.Entry]
    ours: Sequence[section.Entry]
    drop: Sequence[Owner]
    timeout: float
    turn: int = 0
    claim: float | None = None
    released: Sequence[Owner] = ()


@dataclass(frozen=True, slots=True)
class DropTurn:
    """Delete this process's claim of the section's turn: the one made at ``create_revision``,
    or (0) whichever lies on the etcd lease ``lease``."""

    create_revision: int
    lease: int
    timeout: float


@dataclass(frozen=True, slots=True)
class TakeLease:
    """An etcd lease living past ``until`` (plus the margin) for ``users`` acquisitions.
    Result: an :class:`EtcdLease`."""

    until: float
    users: int
    timeout: float
    what: str


@dataclass(frozen=True, slots=True)
class GiveBack:
    """One user of ``lease`` is done with it (the pool revokes it when it is idle and retired)."""

    lease: EtcdLease
    timeout: float


@dataclass(frozen=True, slots=True)
class RetireLease:
    """Never hand ``lease`` out nor renew it again: etcd no longer knows it, or a marker on it
    could not be deleted and must end with it (``leases.py``). An idle lease is revoked."""

    lease: EtcdLease
    timeout: float


@dataclass(frozen=True, slots=True)
class Track:
    """End each of ``helds`` at its deadline if it is still held then (``reaper.py``); one
    that is tracked already is skipped. Result: None."""

    helds: tuple[Any, ...]  # core.Held (the core imports this module)


@dataclass(frozen=True, slots=True)
class DeleteMarker:
    """Delete ``owner``'s holder marker: its entry is dead from then on."""

    owner: Owner
    timeout: float


@dataclass(frozen=True, slots=True)
class DeleteMarkers:
    """Delete the holder markers of ``owners`` in one Txn (releases riding it: ``gate.py``)."""

    owners: tuple[Owner, ...]
    timeout: float


@dataclass(frozen=True, slots=True)
class Tombstone:
    """Make sure ``owner`` holds nothing, whether or not its swap committed (``state.py``)."""

    owner: Owner
    timeout: float


@dataclass(frozen=True, slots=True)
class Wait:
    """Sleep ``seconds``; a shell may wake early when ``wakes_on`` (a context) ends."""

    seconds: float
    wakes_on: Any = None


@dataclass(frozen=True, slots=True)
class WaitTurn:
    """Wait up to ``seconds`` for ``turn`` (what the shell made to wake this acquisition:
    a thread's event, a task's): the gate's leader settled it, or handed it the lead.
    Result: None (the core looks at the gate to know which, if either)."""

    turn: Any
    seconds: float


@dataclass(frozen=True, slots=True)
class CleanUp:
    """Run ``steps`` apart from the caller (a thread, a task), to their end; result: None."""

    steps: Steps


Op = (
    Read
    | Check
    | Swap
    | TakeLease
    | GiveBack
    | RetireLease
    | DeleteMarker
    | DeleteMarkers
    | DropTurn
    | Tombstone
    | Track
    | Wait
    | WaitTurn
    | CleanUp
)

Steps = Generator[Op, Any, Any]
"""A piece of the core: yields operations, receives their results."""
