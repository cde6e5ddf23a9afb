"""What the asyncio stress tests check of the leases their tasks hold, whatever the backend
under them: no two bodies inside their leases hold a common key, and fencing tokens strictly
increase per key."""

from __future__ import annotations

import math
import time

__all__ = ["Holdings", "overlapping"]

Ranges = list[tuple[int, int]]


def overlapping(a: Ranges, b: Ranges) -> bool:
    return any(lo1 < hi2 and lo2 < hi1 for lo1, hi1 in a for lo2, hi2 in b)


class Holdings:
    """The bodies inside their leases, and every grant's token, with what they broke."""

    def __init__(self) -> None:
        self.inside: dict[int, tuple[Ranges, float]] = {}
        self.grants: list[tuple[int, Ranges]] = []
        self.violations: list[str] = []

    def enter(self, me: int, token: int, parts: Ranges, deadline: float = math.inf) -> None:
        now = time.monotonic()
        for other, (theirs, until) in self.inside.items():
            if overlapping(parts, theirs) and until > now:
                self.violations.append(f"bodies overlap: {me} {parts} / {other} {theirs}")
        for t, earlier in self.grants:
            if overlapping(parts, earlier) and t >= token:
                self.violations.append(f"token {token} {parts} after {t} {earlier}")
        self.grants.append((token, parts))
        self.inside[me] = (parts, deadline)

    def leave(self, me: int) -> None:
        self.inside.pop(me, None)
