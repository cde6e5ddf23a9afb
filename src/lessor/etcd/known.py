"""What one process knows of one section: the newest state it has seen, and the entries of its
own that it knows are over before etcd says so.

The state is shared by the process's acquisitions of the section and by its releases, which
run on other threads. Two rules keep it honest:

* **The newer state wins.** :meth:`Known.store` replaces the state only with one read at a
  later revision (or the same revision, confirmed later): a reply that arrives late, or a
  thread that read before another stored, can never put an older state back. Nothing hands
  out a revision from here as a fencing token: a grant's token comes from the reply of the
  Txn that wrote it (``core/attempt.py``).
* **Own releases are a set, not an edit.** A release adds its entry's owner to
  :attr:`released` instead of editing the stored state, so no release can race a store. An
  owner leaves the set once a stored state shows its marker gone.

Entries of :attr:`released` and :attr:`abandoned` owners are not live for this process's own
plans: it knows their holders have stopped (released) or never started (abandoned).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from lessor.etcd import section
from lessor.etcd.keys import Owner, SectionKeys
from lessor.etcd.state import Snapshot
from lessor.etcd.turn import Turns

__all__ = ["Abandoned", "Known", "View"]


@dataclass(frozen=True, slots=True)
class View:
    """A section state and when the Txn that read it was sent (shell clock): the state held
    at some moment after ``fetched_at``."""

    snapshot: Snapshot
    fetched_at: float


class Abandoned:
    """This process's acquisitions of one section that gave up while their swap might still
    commit (its reply was lost; a leader may commit it when quorum returns).

    Their entries are the process's own to discard: its next swap of the section drops them
    and deletes their markers, so the ranges come back at once rather than when a clean-up
    call gets through or the etcd lease expires.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owners: set[Owner] = set()

    def add(self, owner: Owner) -> None:
        with self._lock:
            self._owners.add(owner)

    def discard(self, *owners: Owner) -> None:
        with self._lock:
            self._owners.difference_update(owners)

    def current(self) -> frozenset[Owner]:
        with self._lock:
            return frozenset(self._owners)


class Known:
    """One section as this process knows it."""

    def __init__(self, keys: SectionKeys) -> None:
        self.keys = keys
        self.abandoned = Abandoned()
        self.turns = Turns()  # the gate's leader's alone (``turn.py``)
        self._lock = threading.Lock()
        self._view: View | None = None
        self._floor = 0  # the revision of the newest state ever kept, even if since forgotten
        self._released: set[Owner] = set()

    def view(self) -> View | None:
        """The newest state seen, or None (never read, or unknown since a call failed)."""
        with self._lock:
            return self._view

    def store(self, snapshot: Snapshot, sent: float) -> View:
        """Keep ``snapshot`` (read by a Txn sent at ``sent``) unless a newer state is known;
        return the newest state: the one kept, or ``snapshot`` if it is newer than any kept."""
        offered = View(snapshot, sent)
        with self._lock:
            current = self._view
            if current is None:
                if snapshot.revision < self._floor:
                    return offered  # older than one seen before: true, but not worth keeping
            elif not (
                snapshot.revision > current.snapshot.revision
                or (snapshot.revision == current.snapshot.revision and sent > current.fetched_at)
            ):
                return current
            self._view, self._floor = offered, snapshot.revision
            if self._released:  # released entries whose markers are gone need no memory
                self._released.intersection_update(snapshot.markers)
            return offered

    def invalidate(self, view: View | None) -> None:
        """Forget ``view`` if it is still the one kept: a call whose outcome is unknown may
        have changed the section."""
        with self._lock:
            if self._view is view:
                self._view = None

    def release(self, owner: Owner) -> None:
        """``owner``'s holder has let go: its entry is dead to this process from now on."""
        with self._lock:
            self._released.add(owner)

    def live(self, snapshot: Snapshot) -> list[section.Entry]:
        """The entries of ``snapshot`` that hold ranges as far as this process knows."""
        with self._lock:
            over = set(self._released)
        over.update(self.abandoned.current())
        return [e for e in snapshot.live() if e.owner not in over]

    @property
    def idle(self) -> bool:
        """Nothing of this process's is pending on the section (it may be forgotten)."""
        return not self.abandoned.current()
