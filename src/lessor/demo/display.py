"""The demo's live progress: one line per datacenter, rewritten in place on a terminal.

Anywhere else (a pipe, a CI log) it prints one summary line every ``every`` seconds instead,
so a log stays readable. Events (faults) are printed as lines of their own above the live
block either way.
"""

from __future__ import annotations

import shutil
from collections import deque
from dataclasses import dataclass
from typing import TextIO

__all__ = ["DcLine", "ProgressDisplay"]

_BAR = 20


@dataclass(frozen=True, slots=True)
class DcLine:
    dc: str
    member: str  # the etcd endpoint or member it talks to first
    alive: int
    workers: int
    swept: int


class ProgressDisplay:
    """Feed it :meth:`update` as often as you like; it draws at most every ``every`` seconds
    when ``out`` is not a terminal."""

    def __init__(self, out: TextIO, *, total: int, seconds: float, every: float = 5.0) -> None:
        self.out = out
        self.total = total
        self.seconds = seconds
        self.every = every
        self.tty = out.isatty()
        self._drawn = 0  # lines of the live block on screen
        self._last_print = -float("inf")
        self._history: deque[tuple[float, dict[str, int]]] = deque()

    def _rates(self, now: float, swept: dict[str, int]) -> dict[str, float]:
        self._history.append((now, dict(swept)))
        while len(self._history) > 2 and now - self._history[1][0] >= 2.0:
            self._history.popleft()  # keep a window of about two seconds
        then, before = self._history[0]
        span = now - then
        return {dc: (n - before.get(dc, 0)) / span if span > 0 else 0.0 for dc, n in swept.items()}

    def update(self, elapsed: float, lines: list[DcLine], left: int) -> None:
        rates = self._rates(elapsed, {line.dc: line.swept for line in lines})
        if self.tty:
            share = max(1, self.total // max(1, len(lines)))
            text = [f"t={elapsed:5.1f}s of {self.seconds:g}s   reminders left {left:>9,}"]
            for line in lines:
                filled = min(_BAR, round(_BAR * line.swept / share))
                state = f"{line.alive}/{line.workers} workers" if line.alive else "  DOWN   "
                text.append(
                    f"  {line.dc:<6} {state:<11} swept {line.swept:>9,} "
                    f"{rates[line.dc]:>7,.0f}/s [{'#' * filled}{' ' * (_BAR - filled)}] "
                    f"etcd {line.member}"
                )
            # A wrapped line would break the cursor arithmetic of the next redraw.
            width = shutil.get_terminal_size().columns - 1
            self._redraw([t[:width] for t in text])
        elif elapsed - self._last_print >= self.every:
            self._last_print = elapsed
            per_dc = "  ".join(
                f"{line.dc} {line.swept:,} ({rates[line.dc]:,.0f}/s"
                f"{'' if line.alive else ', down'})"
                for line in lines
            )
            print(f"t={elapsed:5.1f}s  left {left:,}  {per_dc}", file=self.out, flush=True)

    def event(self, elapsed: float, text: str) -> None:
        self._clear()
        print(f"t={elapsed:5.1f}s  {text}", file=self.out, flush=True)

    def finish(self) -> None:
        """Leave the last live block on screen and move below it."""
        self._drawn = 0

    def _clear(self) -> None:
        if self.tty and self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")  # up to the block's start; erase below
            self._drawn = 0

    def _redraw(self, text: list[str]) -> None:
        self._clear()
        self.out.write("".join(f"{line}\n" for line in text))
        self.out.flush()
        self._drawn = len(text)
