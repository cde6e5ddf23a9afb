"""What a process knows of a section (``lessor.etcd.known.Known``).

Proven here:

* store keeps the newer state: an older snapshot stored later never replaces a newer one; an
  equal revision replaces only when it was sent later; after :meth:`Known.invalidate`, a
  snapshot older than the last one kept is returned but not kept, while one at least as new is;
* invalidate forgets only the view it is given;
* release excludes an owner from ``live()`` until a stored state shows its marker gone (a
  stored state that still shows it keeps it excluded); abandoned owners are excluded from
  ``live()`` while abandoned, and a section with abandoned owners is not idle;
* under contention (storers, releasers and a watcher, with a tiny switch interval), the kept
  revision never decreases, ends at the largest revision stored, and a released owner whose
  marker every kept state still shows stays excluded.
"""

from __future__ import annotations

import itertools
import random
import sys
import threading
from collections.abc import Iterable

from lessor.etcd import section
from lessor.etcd.keys import Owner, SectionKeys
from lessor.etcd.known import Known
from lessor.etcd.state import Snapshot
from lessor.partition import Partition, SortedPartitions

KEYS = SectionKeys.of("/t/", "s")


def entry(seq: int) -> section.Entry:
    return section.Entry(1, seq, SortedPartitions([Partition(seq, seq + 1)]), "h")


def snap(revision: int, alive: Iterable[int] = (), entries: Iterable[int] = ()) -> Snapshot:
    """A state at ``revision`` with entries for ``entries`` and markers for ``alive``."""
    return Snapshot(
        revision,
        revision,
        tuple(entry(s) for s in entries),
        {Owner(1, s): revision for s in alive},
    )


def live_seqs(known: Known, snapshot: Snapshot) -> list[int]:
    return [e.seq for e in known.live(snapshot)]


# -- store -----------------------------------------------------------------------------------


def test_the_first_store_is_kept() -> None:
    known = Known(KEYS)
    assert known.view() is None
    s = snap(5)
    view = known.store(s, sent=1.0)
    assert view.snapshot is s and view.fetched_at == 1.0
    assert known.view() == view


def test_an_older_snapshot_stored_later_never_replaces_a_newer_one() -> None:
    known = Known(KEYS)
    newer = known.store(snap(10), sent=1.0)
    assert known.store(snap(9), sent=2.0) == newer  # the newest known is returned
    assert known.view() == newer


def test_a_newer_revision_replaces() -> None:
    known = Known(KEYS)
    known.store(snap(10), sent=2.0)
    newer = known.store(snap(11), sent=1.0)  # sent earlier, but read later in etcd's order
    assert known.view() == newer


def test_an_equal_revision_replaces_only_when_sent_later() -> None:
    known = Known(KEYS)
    first = known.store(snap(10), sent=2.0)
    assert known.store(snap(10), sent=1.0) == first
    assert known.store(snap(10), sent=2.0) == first
    later = known.store(snap(10), sent=3.0)
    assert later != first and known.view() == later and later.fetched_at == 3.0


def test_after_invalidate_an_older_store_is_returned_but_not_kept() -> None:
    known = Known(KEYS)
    kept = known.store(snap(10), sent=1.0)
    known.invalidate(kept)
    assert known.view() is None
    old = snap(9)
    assert known.store(old, sent=5.0).snapshot is old  # true, and the caller may use it
    assert known.view() is None
    same = known.store(snap(10), sent=0.5)  # as new as the last kept: kept
    assert known.view() == same


def test_invalidate_forgets_only_the_view_it_is_given() -> None:
    known = Known(KEYS)
    old = known.store(snap(10), sent=1.0)
    new = known.store(snap(11), sent=2.0)
    known.invalidate(old)  # a call that read ``old`` failed after ``new`` was stored
    assert known.view() == new
    known.invalidate(new)
    assert known.view() is None


# -- release and abandon ---------------------------------------------------------------------


def test_release_excludes_an_owner_until_a_stored_state_shows_its_marker_gone() -> None:
    known = Known(KEYS)
    held = snap(10, alive=[1, 2], entries=[1, 2])
    known.store(held, sent=1.0)
    assert live_seqs(known, held) == [1, 2]
    known.release(Owner(1, 1))
    assert live_seqs(known, held) == [2]
    known.store(snap(11, alive=[1, 2], entries=[1, 2]), sent=2.0)  # marker still there
    assert live_seqs(known, held) == [2]
    known.store(snap(9, alive=[2], entries=[2]), sent=3.0)  # older: not kept, proves nothing
    assert live_seqs(known, held) == [2]
    gone = snap(12, alive=[2], entries=[1, 2])
    known.store(gone, sent=4.0)
    assert live_seqs(known, gone) == [2]  # dead by its marker now
    # The owner is forgotten: only a state from before its marker went would show it again.
    assert live_seqs(known, held) == [1, 2]


def test_an_older_state_that_is_not_kept_does_not_forget_a_release() -> None:
    known = Known(KEYS)
    known.invalidate(known.store(snap(10, alive=[1], entries=[1]), sent=1.0))
    known.release(Owner(1, 1))
    known.store(snap(8, entries=[1]), sent=2.0)  # older than the last kept: not kept
    assert live_seqs(known, snap(10, alive=[1], entries=[1])) == []


def test_abandoned_owners_are_not_live_and_keep_the_section_busy() -> None:
    known = Known(KEYS)
    s = snap(10, alive=[1, 2, 3], entries=[1, 2, 3])
    assert known.idle
    known.abandoned.add(Owner(1, 2))
    known.abandoned.add(Owner(1, 3))
    assert live_seqs(known, s) == [1]
    assert not known.idle
    known.abandoned.discard(Owner(1, 2), Owner(1, 3))
    assert live_seqs(known, s) == [1, 2, 3] and known.idle


def test_entries_without_markers_are_not_live() -> None:
    known = Known(KEYS)
    assert live_seqs(known, snap(10, alive=[2], entries=[1, 2])) == [2]


# -- under contention ------------------------------------------------------------------------


def test_stores_and_releases_race_without_going_back() -> None:
    """Storers offer snapshots of random revisions (owner ``i``'s marker exists below
    revision ``death[i]``, as markers never come back), releasers release owners, and a
    watcher samples the kept revision."""
    rng = random.Random(7)
    owners = 12
    death = {i: rng.randint(1, 2000) for i in range(owners)}

    def state(revision: int) -> Snapshot:
        alive = [i for i in range(owners) if revision < death[i]]
        return snap(revision, alive=alive, entries=range(owners))

    known = Known(KEYS)
    stored: list[int] = []
    released: list[int] = []
    samples: list[int] = []
    stop = threading.Event()
    start = threading.Barrier(7)

    def storer(seed: int) -> None:
        r = random.Random(seed)
        start.wait()
        for n in range(1500):
            revision = r.randint(1, 2000)
            stored.append(revision)
            known.store(state(revision), sent=float(n))

    def releaser(seed: int) -> None:
        r = random.Random(seed)
        start.wait()
        for _ in range(500):
            owner = r.randrange(owners)
            released.append(owner)
            known.release(Owner(1, owner))

    def watcher() -> None:
        start.wait()
        while not stop.is_set():
            view = known.view()
            if view is not None:
                samples.append(view.snapshot.revision)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=storer, args=(i,)) for i in range(4)]
        threads += [threading.Thread(target=releaser, args=(10 + i,)) for i in range(2)]
        watch = threading.Thread(target=watcher)
        for t in [*threads, watch]:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        watch.join()
    finally:
        sys.setswitchinterval(old)

    assert samples, "the watcher saw nothing"
    assert all(a <= b for a, b in itertools.pairwise(samples)), "went back"
    view = known.view()
    assert view is not None and view.snapshot.revision == max(stored)
    # Released owners whose markers every kept state showed are still excluded.
    final = view.snapshot
    live = set(live_seqs(known, final))
    for owner in set(released):
        if final.revision < death[owner]:
            assert owner not in live, f"released owner {owner} live again"
