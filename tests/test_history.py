"""The history checkers find what they exist to find, and nothing else."""

from __future__ import annotations

from lessor import Partition
from lessor.testing import Holding, find_overlaps, find_token_inversions

P = Partition


def h(
    holder: str, ranges: list[Partition], start: float, end: float, token: int, section: str = "s"
) -> Holding:
    return Holding(holder, section, tuple(ranges), start, end, token)


def test_overlap_in_keys_and_time_is_found() -> None:
    a = h("a", [P(0, 10)], 0.0, 1.0, 1)
    b = h("b", [P(20, 30), P(5, 6)], 0.5, 2.0, 2)
    [overlap] = find_overlaps([b, a])
    assert {overlap.first.holder, overlap.second.holder} == {"a", "b"}
    assert overlap.keys == P(5, 6)
    assert "5_6" in str(overlap)


def test_touching_is_not_overlapping() -> None:
    assert not find_overlaps(
        [
            h("a", [P(0, 10)], 0.0, 1.0, 1),
            h("b", [P(0, 10)], 1.0, 2.0, 2),  # starts as a ends
            h("c", [P(10, 20)], 0.0, 2.0, 3),  # adjacent keys
            h("d", [P(0, 10)], 0.5, 0.9, 4, section="other"),  # another section
            h("e", [P(0, 10)], 0.5, 0.5, 5),  # never held: deadline before start
        ]
    )


def test_long_holding_overlaps_a_later_one() -> None:
    holdings = [h("long", [P(0, 100)], 0.0, 10.0, 1)]
    holdings += [h(f"s{i}", [P(200, 300)], float(i), i + 0.5, i + 2) for i in range(5)]
    holdings.append(h("late", [P(50, 60)], 9.0, 9.5, 10))
    [overlap] = find_overlaps(holdings)
    assert overlap.keys == P(50, 60)


def test_token_inversion() -> None:
    a = h("a", [P(0, 10)], 0.0, 1.0, 5)
    b = h("b", [P(5, 15)], 2.0, 3.0, 4)
    c = h("c", [P(50, 60)], 2.0, 3.0, 1)  # disjoint keys: order does not matter
    assert find_token_inversions([a, b, c]) == [(a, b)]
    assert not find_token_inversions([a, h("b", [P(5, 15)], 2.0, 3.0, 6), c])
