"""Who gets what in one attempt: pure arithmetic on ranges, no I/O, no clock.

Members are served in queue order, each getting the part of what it asks that neither a live
entry of the section nor an earlier member of the same attempt holds. The plan also says which
live entries each member's answer rests on, so that an answer drawn from a state read before
the member began can be checked against etcd (``core/attempt.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from lessor.etcd import section
from lessor.etcd.keys import Owner
from lessor.partition import Partition, SortedPartitions, SortedPartitionsBuilder

__all__ = ["MAX_LIVE_LEASES", "Asks", "Plan"]

MAX_LIVE_LEASES = 100
"""Live leases one section may hold at once: the value and the Txn must stay bounded."""


class Asks(Protocol):
    """A member of an attempt: what it asks for."""

    @property
    def part(self) -> Partition: ...


M = TypeVar("M", bound=Asks)


class Plan(Generic[M]):
    """What one attempt gives whom.

    ``proposals`` are the members it answers, in queue order, each with its ranges (maybe
    none); ``writers`` those of them that get ranges and so need an entry written. Members
    past the room left in the section (:data:`MAX_LIVE_LEASES`) wait for a later attempt;
    ``full`` is the first member when not even it fits.
    """

    def __init__(self, pending: Sequence[M], live: Sequence[section.Entry]) -> None:
        self.proposals: list[tuple[M, SortedPartitions]] = []
        self.writers: list[tuple[M, SortedPartitions]] = []
        self.full: M | None = None
        self._relied: list[tuple[M, list[section.Entry]]] = []
        self._after: set[int] = set()  # members whose answers earlier members' grants cut
        room = MAX_LIVE_LEASES - len(live)
        taken: list[Partition] = []
        for m in pending:
            free = SortedPartitionsBuilder(m.part)
            relied = [e for e in live if any(p.overlaps(m.part) for p in e.ranges)]
            for entry in relied:
                for p in entry.ranges:
                    free.exclude(p)
            for p in taken:
                if p.overlaps(m.part):
                    self._after.add(id(m))
                    free.exclude(p)
            parts = free.result()
            if parts and len(self.writers) >= room:
                if not self.writers:
                    self.full = m
                return  # this one and the rest wait for the next attempt
            self.proposals.append((m, parts))
            self._relied.append((m, relied))
            if parts:
                self.writers.append((m, parts))
                taken.extend(parts)

    def relied(self, unproven: Callable[[M], bool]) -> list[section.Entry] | None:
        """The entries that the answers of the ``unproven`` members rest on; None when no
        member is unproven.

        A member whose answer an earlier member's grant cut is never proven by the state
        alone: that grant holds from the write on, so the answer is true only at the write,
        and only if the entries it rests on are still live then (else a key freed between the
        read and the write would be withheld, true at no moment of the call)."""
        found: dict[Owner, section.Entry] = {}
        any_unproven = False
        for m, entries in self._relied:
            if unproven(m) or id(m) in self._after:
                any_unproven = True
                found.update((e.owner, e) for e in entries)
        return list(found.values()) if any_unproven else None
