"""The turn in the section's Txns (``state.py``, ``turn.py``), on the in-memory etcd and on a
real one alike: a lost swap claims it in its failure branch (a Txn nested in the branch),
every swap compares it, and it never lets a swap commit that would not commit without it."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from lessor.etcd.calls import run
from lessor.etcd.channels import Channels
from lessor.etcd.keys import SectionKeys
from lessor.etcd.section import Entry
from lessor.etcd.state import SectionTxns, Snapshot
from lessor.partition import Partition, SortedPartitions
from lessor.testing import LocalEtcd
from tests.support.etcd_model import EtcdModel, FakeClock, ModelTransport

_section_ids = itertools.count()


@dataclass
class Side:
    """One process's view of a section: its Txns and an etcd lease of its own."""

    transport: Any
    txns: SectionTxns
    lease: int
    holder: str

    def entry(self, seq: int, low: int, high: int) -> Entry:
        return Entry(self.lease, seq, SortedPartitions([Partition(low, high)]), self.holder)

    def read(self) -> Snapshot:
        return run(self.transport, self.txns.read(5.0))

    def swap(
        self, snapshot: Snapshot, ours: list[Entry], *, turn: int = 0, claim: bool = False
    ) -> tuple[Snapshot, bool]:
        live = snapshot.live()
        return run(
            self.transport, self.txns.swap(snapshot, live, [], ours, 5.0, turn=turn, claim=claim)
        )


@pytest.fixture(params=["model", "etcd"])
def sides(request: pytest.FixtureRequest) -> Iterator[tuple[Side, Side]]:
    """Two processes' sides of one fresh section, on the in-memory etcd or a real one."""
    transport: Any
    if request.param == "model":
        transport = ModelTransport(EtcdModel(FakeClock()))
    else:
        server: LocalEtcd = request.getfixturevalue("etcd_server")
        transport = Channels(server.endpoints)
    keys = SectionKeys.of("/turn-test/", f"s{next(_section_ids)}")
    made = []
    for holder in ("a", "b"):
        grant = transport.lease("LeaseGrant", transport.rpc.LeaseGrantRequest(TTL=30), 5, "t")
        made.append(Side(transport, SectionTxns(transport.rpc, keys), int(grant.ID), holder))
    try:
        yield made[0], made[1]
    finally:
        for side in made:
            transport.lease("LeaseRevoke", transport.rpc.LeaseRevokeRequest(ID=side.lease), 5, "t")
        transport.close()


def test_a_lost_swap_claims_the_turn_in_its_failure_branch(sides: tuple[Side, Side]) -> None:
    a, b = sides
    before = a.read()
    won, written = a.swap(before, [a.entry(1, 0, 4)])
    assert written and won.turn is None
    fresh, written = b.swap(before, [b.entry(1, 2, 8)], claim=True)  # built on an old state
    assert not written
    assert fresh.turn is not None
    assert (fresh.turn.lease, fresh.turn.holder) == (b.lease, "b")
    assert fresh.turn.create_revision == fresh.revision  # made by this very Txn
    assert [e.owner for e in fresh.live()] == [(a.lease, 1)]  # the section is a's alone


def test_no_claim_is_made_over_a_turn_already_held(sides: tuple[Side, Side]) -> None:
    a, b = sides
    before = a.read()
    a.swap(before, [a.entry(1, 0, 4)])
    held, _ = b.swap(before, [b.entry(1, 2, 8)], claim=True)
    assert held.turn is not None
    again, written = a.swap(before, [a.entry(2, 8, 9)], claim=True)
    assert not written
    assert again.turn == held.turn


def test_while_one_holds_the_turn_a_swap_that_expects_none_fails(
    sides: tuple[Side, Side],
) -> None:
    a, b = sides
    before = a.read()
    a.swap(before, [a.entry(1, 0, 4)])
    held, _ = b.swap(before, [b.entry(1, 2, 8)], claim=True)
    fresh, written = a.swap(held, [a.entry(2, 8, 9)])  # the newest state, but turn 0
    assert not written
    assert fresh.mod_revision == held.mod_revision  # nothing written
    assert fresh.turn == held.turn


def test_the_holder_swap_commits_and_ends_the_turn(sides: tuple[Side, Side]) -> None:
    a, b = sides
    before = a.read()
    a.swap(before, [a.entry(1, 0, 4)])
    held, _ = b.swap(before, [b.entry(1, 4, 8)], claim=True)
    assert held.turn is not None
    written_state, written = b.swap(held, [b.entry(1, 4, 8)], turn=held.turn.create_revision)
    assert written
    read = a.read()
    assert read.turn is None
    assert read.markers[(b.lease, 1)] == written_state.revision  # the token: the Txn's revision


def test_drop_turn_ends_only_the_claim_it_names(sides: tuple[Side, Side]) -> None:
    a, b = sides
    before = a.read()
    a.swap(before, [a.entry(1, 0, 4)])
    held, _ = b.swap(before, [b.entry(1, 2, 8)], claim=True)
    assert held.turn is not None
    run(b.transport, b.txns.drop_turn(held.turn.create_revision + 1000, 0, 5.0))
    assert a.read().turn == held.turn
    run(b.transport, b.txns.drop_turn(held.turn.create_revision, 0, 5.0))
    assert a.read().turn is None


@pytest.mark.parametrize("expect", ["none", "the claim", "another claim"])
@pytest.mark.parametrize("held", [False, True])
@pytest.mark.parametrize("fresh", [False, True])
def test_the_turn_never_lets_a_swap_commit_that_would_not_without_it(
    sides: tuple[Side, Side], expect: str, held: bool, fresh: bool
) -> None:
    """Every combination of a state current or not, a turn held or not, and what the swap
    expects of it: it commits only when the state is current and the expectation right."""
    a, b = sides
    first = a.read()
    now, _ = a.swap(first, [a.entry(1, 0, 4)])
    if held:
        now, _ = b.swap(first, [b.entry(1, 2, 8)], claim=True)
        assert now.turn is not None
    claim = now.turn.create_revision if now.turn is not None else 0
    turn = {"none": 0, "the claim": claim, "another claim": claim + 1000}[expect]
    _, written = b.swap(now if fresh else first, [b.entry(2, 10, 12)], turn=turn)
    right = turn == claim if held else turn == 0
    assert written == (fresh and right)
