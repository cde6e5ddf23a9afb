"""Properties of split, exclude and only_in, checked against plain sets of keys."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from lessor.partition import Partition, SortedPartitions, SortedPartitionsBuilder

KEY_SPACE_BYTES = 1
UNIVERSE = 256


@st.composite
def partitions(draw: st.DrawFn, limit: int = UNIVERSE) -> Partition:
    a = draw(st.integers(0, limit))
    b = draw(st.integers(0, limit))
    return Partition(min(a, b), max(a, b))


def keys_of(parts: list[Partition] | SortedPartitions) -> set[int]:
    return {k for p in parts for k in range(p.low, p.high)}


@given(partitions(limit=10**40), st.integers(1, 50))
def test_split_covers_exactly(p: Partition, shards: int) -> None:
    if p.is_empty():
        return
    parts = p.split(shards)
    assert 1 <= len(parts) <= shards
    assert parts[0].low == p.low and parts[-1].high == p.high
    for a, b in itertools.pairwise(parts):
        assert a.high == b.low  # contiguous, no gap, no overlap
    size = parts[0].high - parts[0].low
    assert all(q.high - q.low == size for q in parts[:-1])
    assert 0 < parts[-1].high - parts[-1].low <= size


@given(partitions(), st.lists(partitions(), max_size=12))
def test_exclude_is_set_difference(start: Partition, excluded: list[Partition]) -> None:
    b = SortedPartitionsBuilder(start)
    want = keys_of([start])
    for q in excluded:
        b.exclude(q)
        want -= keys_of([q])
        result = b.result()
        assert keys_of(result) == want
        assert all(not p.is_empty() for p in result)
        assert all(x.high < y.low for x, y in itertools.pairwise(result))  # disjoint, not adjacent
        assert b.is_empty() == (not want)


@given(st.lists(partitions(), max_size=6), st.lists(st.integers(0, UNIVERSE - 1), max_size=40))
def test_only_in_selects_keys_inside(raw: list[Partition], ints: list[int]) -> None:
    b = SortedPartitionsBuilder(Partition(0, UNIVERSE))
    for q in raw:
        b.exclude(q)
    sp = b.result()  # some disjoint partitions
    keys = sorted(format(k, "02x") for k in ints)
    inside = keys_of(sp)
    assert sp.filter_sorted(keys, KEY_SPACE_BYTES) == [k for k in keys if int(k, 16) in inside]
    runs: list[tuple[int, int]] = []
    sp.only_in(len(keys), keys.__getitem__, lambda i, j: runs.append((i, j)), KEY_SPACE_BYTES)
    assert all(i < j for i, j in runs)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(runs))


@given(partitions(limit=2**70))
def test_text_and_json_round_trip(p: Partition) -> None:
    assert Partition.from_string(str(p)) == p
    assert Partition.from_json(p.to_json()) == p


@given(
    partitions(), st.integers(0, 255), st.integers(0, 50), st.integers(1, 50), st.integers(1, 20)
)
def test_educated_split_after_covers_rest(
    p: Partition, cut: int, before: int, target: int, max_shards: int
) -> None:
    if not p.low <= cut < p.high:
        return
    parts = p.educated_split_after(format(cut, "x"), before, target, max_shards)
    assert len(parts) <= max_shards
    assert keys_of(parts) == set(range(cut + 1, p.high))
