"""Fairness across processes on one section: its turn, and what one process makes of it.

Every swap of a section compares one key, so without help the process closest to etcd's
leader wins almost every race and the others lose run after run. The section's *turn key*
(``keys.py``) bounds those runs:

* A process whose swaps lost :data:`CLAIM_AFTER` times in a row claims the turn in the failure
  branch of its next swap, if nobody holds it (``state.SectionTxns.swap``): the claim costs
  no round trip and no write of its own, for a lost swap is a raft write anyway.
* Every swap compares the turn as it last saw it: none (``VERSION == 0``), or the claim it
  saw (``CREATE == c``, and the swap deletes the key when it commits). A claim made after the
  swap's state was read therefore makes it fail.
* A process that sees another's claim sends no swap that is bound to fail: it pauses about
  one attempt's time and reads again (a read, no write). The holder pauses 0: its state,
  fresh from its failure branch, holds while everyone else waits, so its next swap wins.
* A claim seen for longer than :meth:`Turns.patience` (its holder died or stopped
  acquiring) is taken over: the swap expects it and deletes it when it commits. A holder
  that stops contending without a win deletes its own claim (``core/lead.py``).

**Safety.** The turn only ever adds a compare to a swap: no swap commits that would not have
committed without it, and the fencing token is still the revision of the winning Txn. The
turn key holds no ranges, and its writes touch neither the section value nor any marker.

Only the leader of the section's gate (one thread at a time) uses a :class:`Turns`.
"""

from __future__ import annotations

from lessor.etcd.state import Turn

__all__ = ["CLAIM_AFTER", "Turns"]

CLAIM_AFTER = 1
"""Lost swaps in a row after which a process's next swap claims the turn if it loses too."""

PATIENCE_ATTEMPTS = 8
"""Another's claim is respected for this many of our attempts' time (:meth:`Turns.patience`)."""

MIN_PATIENCE = 0.01
MAX_PATIENCE = 0.5


class Turns:
    """One process's view of one section's turn: its own claim, the losses that lead to one,
    and for how long it has let another's claim stand."""

    def __init__(self) -> None:
        self.losses = 0  # swaps lost in a row
        self.claimed = 0  # the create revision of our claim; 0: we hold none
        self._seen = 0  # another's claim we defer to ...
        self._seen_at = 0.0  # ... since then
        self.attempt = 0.0  # a swap's round trip, smoothed (seconds)

    @property
    def holding(self) -> bool:
        return self.claimed != 0

    @property
    def wants_claim(self) -> bool:
        return not self.claimed and self.losses >= CLAIM_AFTER

    def patience(self) -> float:
        """How long another's claim is respected: its holder needs one round trip to win."""
        return min(MAX_PATIENCE, max(MIN_PATIENCE, PATIENCE_ATTEMPTS * self.attempt))

    def expect(self, turn: Turn | None, now: float) -> int | None:
        """What our next swap compares the turn key to (0: absent; else a create revision),
        given the ``turn`` of the state it is built on; None: another holds the turn, do
        not swap (pause :meth:`pause` and read again)."""
        if turn is None:
            self.claimed = self._seen = 0
            return 0
        if turn.create_revision == self.claimed:
            return self.claimed
        self.claimed = 0  # ours was taken over
        if turn.create_revision != self._seen:
            self._seen, self._seen_at = turn.create_revision, now
        if now - self._seen_at < self.patience():
            return None
        return turn.create_revision  # held too long: take it over

    def pause(self) -> float:
        """How long to wait before reading again while another holds the turn."""
        return self.attempt

    def swapped(
        self, written: bool, seconds: float, *, claim: bool, turn: Turn | None, revision: int
    ) -> None:
        """A swap that took ``seconds`` ended; ``claim``: its failure branch claimed the turn
        if free; ``turn`` and ``revision`` are those of the state it brought back."""
        self.attempt = seconds if not self.attempt else 0.8 * self.attempt + 0.2 * seconds
        if written:
            self.losses, self.claimed, self._seen = 0, 0, 0
            return
        self.losses += 1
        if claim and turn is not None and turn.create_revision == revision:
            # Created at our Txn's own revision: by our failure branch, for a Txn that writes
            # gets a revision of its own (and ours wrote, or the turn would be older).
            self.claimed = revision

    def dropped(self) -> None:
        self.claimed = 0
