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
  one attempt's time (:meth:`Turns.pause`, never 0) and reads again (a read, no write). The
  holder pauses 0 right after a Txn of its own lost (a swap, or a check): its state, fresh
  from the failure branch, holds while everyone else waits, so its next swap wins. After any
  other failure (an etcd error, too little time left for a call), or a second lost swap in a
  row while it holds the turn (a writer that does not defer: a process of an older version,
  a takeover), it backs off as everyone does (:attr:`Turns.due`).
* A claim seen for longer than the others' patience (:meth:`Turns.patience`: eight round
  trips of the slower of the deferring process and the holder, whose round trip the claim
  carries; at least :data:`MIN_PATIENCE`, at most :data:`MAX_PATIENCE`) is taken over: the
  swap expects it and deletes it when it commits. So a holder farther from etcd than the
  others (another datacenter) still has the time its swap needs. A deferral alone never runs
  an acquisition out of time: one whose deadline leaves no time to defer again and then read
  and swap takes the claim over at once (:meth:`Turns.expect`).
* A process that stops contending (the last of its acquisitions of the section leaves the
  gate: settled, late, withdrawn or interrupted) deletes the claim it holds, or the one its
  last claiming swap may have made if that swap's reply never came (``core/lead.py``,
  ``_end_turn``).

**Whose claim.** A claim is this process's when it lies on an etcd lease that one of its own
claiming swaps named (:meth:`Turns.claiming`, told before the swap is sent): a claim made by a
swap whose reply was lost is then still known for ours, and a claim made by another process
is never taken for ours, whatever revision the reply carries (a failure branch whose claim
found the turn taken writes nothing, and its reply carries the revision of the newest write,
which may be that other claim). Ours or not, a swap compares a claim by its create revision:
the same lease can carry a later claim. A claim of ours on an etcd lease that is retired or
past its local expiry is still compared (never deferred to) but not held: it may vanish any
moment, so it earns no pause of 0.

**Safety.** The turn only ever adds a compare to a swap: no swap commits that would not have
committed without it, and the fencing token is still the revision of the winning Txn. The
turn key holds no ranges, and its writes touch neither the section value nor any marker.

**Cost.** A deferring process learns that a turn ended only at its next read (a pause of
about one round trip, then the read), where without the turn a loser's next swap would
already be on its way. Where nobody is nearer etcd than the others, the turn costs throughput
and raises the median, for a bounded tail: in the benchmark's S4b (three members, 2 ms per
hop) 9 % fewer grants; eight processes 30 ms from etcd with 0.25 s deadlines, simulated
(``tests/core/test_turn_review5_equal_far.py``), a quarter fewer grants and twice the deadline
failures. Where some are nearer than others it is what lets the far ones win at all. (A watch
on the turn key would end the turn for the others half a round trip after the win; not built.)

**Liveness.** A claim nobody drops is ended by the others' patience: the first process to
meet it defers for at most :data:`MAX_PATIENCE` from when it first sees it, then takes it
over. That covers a crashed holder (the claim lives on its etcd lease until the TTL), a holder
whose generator was closed mid-attempt (no call can be made there), a failed or unanswered
drop, and a claiming swap that etcd applied after the drop that followed it. After a crash,
the first acquirer of the freed keys may therefore come up to about :data:`MAX_PATIENCE`
later than the "no lost release" bound says (``DESIGN.md``).

Only the leader of the section's gate (one thread at a time) uses a :class:`Turns`, or, when
the gate is left idle, the acquisition that left it so (``core/lead.py``, ``_end_turn``).
"""

from __future__ import annotations

from lessor.etcd.leases import EtcdLease
from lessor.etcd.state import Turn

__all__ = ["CLAIM_AFTER", "Turns"]

CLAIM_AFTER = 1
"""Lost swaps in a row after which a process's next swap claims the turn if it loses too."""

PATIENCE_ATTEMPTS = 8
"""Another's claim is respected for this many of our attempts' time (:meth:`Turns.patience`)."""

MIN_PATIENCE = 0.01
MAX_PATIENCE = 0.5

MIN_PAUSE = 0.002
"""The shortest pause before reading again while another holds the turn: a process that has
timed no swap yet (or whose swaps took no measurable time) still lets time pass between reads."""


class Turns:
    """One process's view of one section's turn: its own claim, the losses that lead to one,
    and for how long it has deferred to others' claims."""

    def __init__(self) -> None:
        self.losses = 0  # swaps lost in a row
        self.claimed = 0  # the create revision of the claim we hold; 0: we hold none
        self._lost_holding = (0, 0)  # a claim of ours, and the swaps lost while holding it
        self._on: dict[int, EtcdLease] = {}  # the etcd leases our claiming swaps named, by id
        self._deferring: float | None = None  # since when we defer to others' claims ...
        self._patience = MIN_PATIENCE  # ... and for how long we may
        self._unanswered = 0  # the etcd lease our claiming swap named whose reply never came
        self.attempt = 0.0  # a call's round trip (swaps and reads), smoothed (seconds)

    @property
    def holding(self) -> bool:
        return self.claimed != 0

    @property
    def due(self) -> bool:
        """Whether our next swap is the one the others let win: we hold the turn and lost one
        swap since we took it (the claiming one, or a later one). Two losses in a row while
        holding it mean a writer that does not defer (a process of an older version, or one
        taking the claim over): the holder then backs off like anyone."""
        return self.holding and self._lost_holding[0] == self.claimed and self._lost_holding[1] <= 1

    @property
    def wants_claim(self) -> bool:
        return not self.claimed and self.losses >= CLAIM_AFTER

    def patience(self, holder: float = 0.0) -> float:
        """How long a claim is respected whose holder's swaps take ``holder`` seconds (0: not
        known): it needs one of its round trips to win, and ours tells how long the others'
        take now (their calls cross the same etcd)."""
        rounds = PATIENCE_ATTEMPTS * max(self.attempt, holder)
        return min(MAX_PATIENCE, max(MIN_PATIENCE, rounds))

    def claiming(self, lease: EtcdLease, now: float) -> None:
        """Our next swap claims the turn on ``lease`` if it loses: from before it is sent, a
        claim on ``lease`` is ours, whether or not the reply comes back. Leases past their
        local expiry are forgotten (their claims with them, or soon after)."""
        self._on = {i: on for i, on in self._on.items() if now < on.expiry}
        self._on[lease.id] = lease
        self._unanswered = lease.id  # until :meth:`swapped` says how it ended

    def expect(self, turn: Turn | None, now: float, deadline: float) -> int | None:
        """What our next swap compares the turn key to (0: absent; else a create revision),
        given the ``turn`` of the state it is built on; None: another holds the turn, do
        not swap (pause :meth:`pause` and read again).

        Another's claim is taken over once we have deferred for our patience with it, or
        sooner when deferring once more would leave no time before ``deadline`` (the last
        moment a call can be made for the earliest of the acquisitions the swap is for) to
        read again and swap: a deferral alone never runs an acquisition out of time, whatever
        the patience (a claim nobody drops stands until someone takes it over). The patience
        is counted from our first deferral since our last attempt that did not defer,
        whichever claims we met since: claims that follow one another faster than it (others
        taking them over) cannot keep a process from swapping for longer."""
        if turn is None:
            self.claimed, self._deferring = 0, None
            return 0
        on = self._on.get(turn.lease)
        if on is not None:  # ours: compared, never deferred to
            self.claimed, self._deferring = _held(turn, on, now), None
            return turn.create_revision
        self.claimed = 0  # another's (ours was taken over, if we held one)
        if self._deferring is None:
            self._deferring = now
        self._patience = self.patience(turn.attempt)
        calls = 2 * max(self.attempt, MIN_PAUSE)  # a read, then a swap
        if now - self._deferring < self._patience and now + self.pause() + calls < deadline:
            return None
        return turn.create_revision  # deferred too long, or no time left to: take it over

    def pause(self) -> float:
        """How long to wait before reading again while another holds the turn: about one
        attempt, never 0 (:data:`MIN_PAUSE`), never past our patience with it."""
        return min(self._patience, max(MIN_PAUSE, self.attempt))

    def went_on(self) -> None:
        """An attempt settled its acquisitions without a swap (nothing to write, or a check):
        it did not defer, so a deferral after it starts a new streak."""
        self._deferring = None

    def timed(self, seconds: float) -> None:
        """A call on the section (a swap, or a read) took ``seconds``."""
        self.attempt = seconds if not self.attempt else 0.8 * self.attempt + 0.2 * seconds

    def swapped(self, written: bool, turn: Turn | None, *, seconds: float, now: float) -> None:
        """A swap that took ``seconds`` ended at ``now``; ``turn`` is that of the state it
        brought back (the state written, or the fresh state of its failure branch)."""
        self.timed(seconds)
        self._unanswered = 0  # the state it brought back shows whether a claim of ours stands
        self._deferring = None
        if written:  # it expected no turn, or deleted the one it expected
            self.losses, self.claimed = 0, 0
            return
        self.losses += 1
        on = None if turn is None else self._on.get(turn.lease)
        # None, or another's (ours was taken over), or ours: made by this swap's failure
        # branch, or by an earlier swap of ours whose reply was lost.
        self.claimed = 0 if turn is None or on is None else _held(turn, on, now)
        claim, lost = self._lost_holding
        self._lost_holding = (self.claimed, lost + 1 if claim == self.claimed else 1)

    def leaving(self) -> tuple[int, int] | None:
        """The process stops contending (no acquisition of the section is left): the claim to
        delete, if any, as ``(create revision, 0)`` of the claim we hold, or ``(0, lease)``:
        a claim our last claiming swap may have made on that etcd lease (its reply never
        came). Forgotten either way (a later claim is found in a later state), and so are the
        losses and the deferrals: the next acquisition starts afresh."""
        claimed, unanswered = self.claimed, self._unanswered
        self.claimed = self._unanswered = self.losses = 0
        self._deferring = None
        if claimed:
            return claimed, 0
        return (0, unanswered) if unanswered else None


def _held(turn: Turn, on: EtcdLease, now: float) -> int:
    """The create revision of ``turn``, our claim on the etcd lease ``on``, while it is worth
    holding: 0 once that lease is retired or past its local expiry (the claim may vanish any
    moment)."""
    return turn.create_revision if not on.retired and now < on.expiry else 0
