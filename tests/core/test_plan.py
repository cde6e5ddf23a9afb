"""Who gets what in one attempt (``lessor.etcd.plan.Plan``).

Proven here:

* members are answered in queue order; an earlier member takes the keys it overlaps with a
  later one; live entries' ranges are never granted;
* ``relied`` names the live entries overlapping the parts of the members it is asked about
  (once each), and None when it is asked about none;
* the room left in the section (:data:`MAX_LIVE_LEASES` minus the live entries): members that
  need an entry past it wait for a later attempt (they and everyone after them are left out),
  members that need none are answered before it, and ``full`` is the first member when not even
  it fits;
* a property (hypothesis): the proposals are a prefix of the queue, their ranges are disjoint
  from each other and from every live entry, each member gets exactly
  ``part - live - earlier members' grants``, writers are the proposals with ranges, and the
  plan stops only where the room ran out.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from lessor.etcd import section
from lessor.etcd.plan import MAX_LIVE_LEASES, Plan
from lessor.partition import Partition, SortedPartitions

KEYS = 24


@dataclass(frozen=True, eq=False)
class Ask:
    name: str
    part: Partition


def entry(seq: int, *ranges: tuple[int, int]) -> section.Entry:
    return section.Entry(1, seq, SortedPartitions(Partition(lo, hi) for lo, hi in ranges), "h")


def fillers(n: int, first_seq: int = 1000) -> list[section.Entry]:
    """Live entries far from every key a test asks for: they only take room."""
    return [entry(first_seq + i, (1000 + i, 1001 + i)) for i in range(n)]


def keys(parts: SortedPartitions | Partition) -> set[int]:
    ps = [parts] if isinstance(parts, Partition) else list(parts)
    return {k for p in ps for k in range(p.low, p.high)}


def granted(plan: Plan[Ask]) -> dict[str, list[str]]:
    return {m.name: parts.to_strings() for m, parts in plan.proposals}


def test_members_are_answered_in_queue_order_earlier_ones_taking_overlaps() -> None:
    a, b, c = Ask("a", Partition(0, 8)), Ask("b", Partition(4, 12)), Ask("c", Partition(0, 16))
    plan = Plan([a, b, c], live=[])
    assert granted(plan) == {"a": ["0_8"], "b": ["8_c"], "c": ["c_10"]}
    assert [m for m, _ in plan.writers] == [a, b, c]
    assert plan.full is None


def test_live_entries_are_never_granted() -> None:
    live = [entry(1, (2, 4), (10, 12)), entry(2, (6, 7))]
    plan = Plan([Ask("a", Partition(0, 16))], live)
    assert granted(plan) == {"a": ["0_2", "4_6", "7_a", "c_10"]}


def test_a_member_left_with_nothing_is_answered_but_writes_nothing() -> None:
    a, b = Ask("a", Partition(0, 8)), Ask("b", Partition(2, 6))
    plan = Plan([a, b], live=[entry(1, (8, 9))])
    assert granted(plan) == {"a": ["0_8"], "b": []}
    assert [m for m, _ in plan.writers] == [a]


def test_relied_names_the_live_entries_under_the_unproven_members_parts() -> None:
    e1, e2, e3 = entry(1, (0, 2)), entry(2, (10, 12)), entry(3, (20, 22))
    a, b = Ask("a", Partition(0, 8)), Ask("b", Partition(8, 16))
    plan = Plan([a, b], live=[e1, e2, e3])
    assert plan.relied(lambda m: False) is None
    assert plan.relied(lambda m: m is a) == [e1]
    assert sorted(e.seq for e in plan.relied(lambda m: True) or []) == [1, 2]


def test_a_member_cut_by_an_earlier_members_grant_is_never_proven_by_the_state() -> None:
    """b's answer is part - live - a's grant: true only at the write, and only if what it rests
    on is still live then (review of the core: otherwise b could be told a key freed between
    the read and the write is held)."""
    e1, e2 = entry(1, (0, 2)), entry(2, (10, 12))
    a, b = Ask("a", Partition(0, 8)), Ask("b", Partition(0, 16))
    plan = Plan([a, b], live=[e1, e2])
    assert sorted(e.seq for e in plan.relied(lambda m: False) or []) == [1, 2]  # e1 once
    assert sorted(e.seq for e in plan.relied(lambda m: m is a) or []) == [1, 2]


def test_relied_is_empty_not_none_for_an_unproven_member_on_free_keys() -> None:
    plan = Plan([Ask("a", Partition(0, 4))], live=[entry(1, (8, 9))])
    assert plan.relied(lambda m: True) == []


def test_members_past_the_room_wait_for_a_later_attempt() -> None:
    a, b, c = Ask("a", Partition(0, 4)), Ask("b", Partition(4, 8)), Ask("c", Partition(8, 12))
    plan = Plan([a, b, c], fillers(MAX_LIVE_LEASES - 1))
    assert granted(plan) == {"a": ["0_4"]}
    assert plan.full is None  # a fits: b and c just wait
    assert plan.relied(lambda m: True) == []  # b and c are not answered: nothing rests on them


def test_members_needing_no_entry_are_answered_until_one_needs_room() -> None:
    a, b, c = Ask("a", Partition(0, 4)), Ask("b", Partition(0, 2)), Ask("c", Partition(4, 8))
    plan = Plan([a, b, c], fillers(MAX_LIVE_LEASES - 1))
    assert granted(plan) == {"a": ["0_4"], "b": []}
    assert plan.full is None


def test_full_when_not_even_the_first_fits() -> None:
    a, b = Ask("a", Partition(0, 4)), Ask("b", Partition(4, 8))
    plan = Plan([a, b], fillers(MAX_LIVE_LEASES))
    assert plan.full is a and plan.proposals == [] and plan.writers == []


def test_full_names_the_first_that_needs_an_entry() -> None:
    a, b = Ask("a", Partition(1000, 1001)), Ask("b", Partition(4, 8))  # a: all taken
    plan = Plan([a, b], fillers(MAX_LIVE_LEASES))
    assert granted(plan) == {"a": []}
    assert plan.full is b


parts = st.tuples(st.integers(0, KEYS - 1), st.integers(1, KEYS)).map(
    lambda t: Partition(t[0], min(KEYS, t[0] + t[1]))
)


@st.composite
def entries(draw: st.DrawFn) -> list[section.Entry]:
    """Live entries of one or two ranges each (entries may overlap one another here)."""
    found = []
    for seq in range(draw(st.integers(0, 5))):
        size = draw(st.sampled_from([2, 4]))
        bounds = sorted(draw(st.sets(st.integers(0, KEYS), min_size=size, max_size=size)))
        ranges = [Partition(lo, hi) for lo, hi in zip(bounds[::2], bounds[1::2], strict=True)]
        found.append(section.Entry(1, seq, SortedPartitions(ranges), "h"))
    return found


@settings(max_examples=200, deadline=None)
@given(
    asked=st.lists(parts, min_size=1, max_size=7),
    live=entries(),
    room_taken=st.sampled_from([0, 0, MAX_LIVE_LEASES - 6, MAX_LIVE_LEASES - 2]),
)
def test_grants_are_exactly_what_is_free_in_queue_order(
    asked: list[Partition], live: list[section.Entry], room_taken: int
) -> None:
    pending = [Ask(f"m{i}", p) for i, p in enumerate(asked)]
    all_live = live + fillers(max(0, room_taken - len(live)))
    plan = Plan(pending, all_live)
    room = MAX_LIVE_LEASES - len(all_live)

    answered = [m for m, _ in plan.proposals]
    assert answered == pending[: len(answered)], "proposals are a prefix of the queue"
    held = set().union(*(keys(e.ranges) for e in all_live))
    taken: set[int] = set()
    for m, got in plan.proposals:
        got_keys = keys(got)
        assert got_keys == keys(m.part) - held - taken
        assert sum(p.high - p.low for p in got) == len(got_keys), "ranges overlap"
        taken |= got_keys
    assert plan.writers == [(m, got) for m, got in plan.proposals if got]
    assert len(plan.writers) <= max(0, room)
    if len(answered) < len(pending):
        nxt = pending[len(answered)]
        assert keys(nxt.part) - held - taken, "a member that needs no entry is left out"
        assert len(plan.writers) >= room
        assert plan.full is (nxt if not plan.writers else None)
    else:
        assert plan.full is None
    relied = plan.relied(lambda m: True)
    assert relied is not None
    expected = {e.owner for e in all_live if any(keys(p) & keys(m.part)
                                                 for p in e.ranges for m in answered)}  # fmt: skip
    assert sorted(e.owner for e in relied) == sorted(expected)
