"""Recorded lease histories, and the checks that prove the contract held over them.

A :class:`Holding` is one holder relying on one lease: from ``start`` (when its callback
began) to ``end`` (the earlier of its deadline and the moment it gave the lease back), on the
:func:`time.monotonic` clock, which on Linux is shared by every process of the machine.

Tests, benchmarks and the demo record holdings as they run and check them afterwards, so a
concurrency claim is proven from what happened rather than assumed.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from lessor.partition import Partition

__all__ = ["History", "Holding", "Overlap", "find_overlaps", "find_token_inversions"]


@dataclass(frozen=True, slots=True)
class Holding:
    """One holder's use of one lease: ``ranges`` of ``section_id`` during ``[start, end)``."""

    holder: str
    section_id: str
    ranges: tuple[Partition, ...]
    start: float
    end: float
    token: int


@dataclass(frozen=True, slots=True)
class Overlap:
    """Two holdings that held the common range ``keys`` at the same time."""

    first: Holding
    second: Holding
    keys: Partition

    def __str__(self) -> str:
        a, b = self.first, self.second
        both = min(a.end, b.end) - max(a.start, b.start)
        return (
            f"section {a.section_id!r}: keys {self.keys} held by {a.holder} "
            f"(token {a.token}) and {b.holder} (token {b.token}) for {both * 1e3:.3f} ms"
        )


def find_overlaps(holdings: Iterable[Holding]) -> list[Overlap]:
    """Every pair of holdings of one section that shared a key while both were held."""
    by_section: dict[str, list[tuple[float, float, int, int, Holding]]] = defaultdict(list)
    for h in holdings:
        if h.end <= h.start:
            continue  # never held: the deadline passed before the callback ran
        for p in h.ranges:
            if not p.is_empty():
                by_section[h.section_id].append((h.start, h.end, p.low, p.high, h))
    found: list[Overlap] = []
    for intervals in by_section.values():
        intervals.sort(key=lambda iv: iv[0])
        active: list[tuple[float, float, int, int, Holding]] = []
        for iv in intervals:
            start, _, low, high, holding = iv
            active = [a for a in active if a[1] > start]  # still held when iv starts
            for _, _, a_low, a_high, a_holding in active:
                if a_holding is not holding and a_low < high and low < a_high:
                    found.append(
                        Overlap(a_holding, holding, Partition(max(low, a_low), min(high, a_high)))
                    )
            active.append(iv)
    return found


def find_token_inversions(holdings: Iterable[Holding]) -> list[tuple[Holding, Holding]]:
    """Pairs ``(a, b)`` sharing a key where ``a`` ended before ``b`` began, yet ``a.token >=
    b.token``: a fenced store would then accept ``a``'s late writes over ``b``'s."""
    by_section: dict[str, list[Holding]] = defaultdict(list)
    for h in holdings:
        if h.ranges:
            by_section[h.section_id].append(h)
    found: list[tuple[Holding, Holding]] = []
    for items in by_section.values():
        items.sort(key=lambda h: h.start)
        for i, b in enumerate(items):
            for a in items[:i]:
                if a.end <= b.start and a.token >= b.token and _share_key(a, b):
                    found.append((a, b))
    return found


def _share_key(a: Holding, b: Holding) -> bool:
    return any(p.overlaps(q) for p in a.ranges for q in b.ranges)


class History:
    """A thread-safe list of holdings."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holdings: list[Holding] = []

    def record(self, holding: Holding) -> None:
        with self._lock:
            self._holdings.append(holding)

    @property
    def holdings(self) -> list[Holding]:
        with self._lock:
            return list(self._holdings)
