"""Partition behaviour: LUCI's partition_test.go vectors, then what Python adds."""

from __future__ import annotations

import pickle

import pytest

from lessor.partition import Partition, SortedPartitions, SortedPartitionsBuilder

P = Partition


# -- LUCI's vectors ----------------------------------------------------------------------------


def test_universe() -> None:
    assert (P.universe(1).low, P.universe(1).high) == (0, 256)
    assert (P.universe(4).low, P.universe(4).high) == (0, 1 << 32)


def test_to_from_string() -> None:
    assert str(P.universe(1)) == "0_100"
    p = P.from_string("f0_ff")
    assert (p.low, p.high) == (240, 255)


@pytest.mark.parametrize("text", ["_", "10_", "_1", "10_-1"])
def test_from_string_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=repr(text).replace("\\", "\\\\")):
        P.from_string(text)


def test_json_round_trip() -> None:
    p = P.from_ints(5, 64)
    assert p.to_json() == '"5_40"'
    assert P.from_json(p.to_json()) == p


def test_json_null() -> None:
    assert P.from_json("null") is None


def test_json_partial_error() -> None:
    with pytest.raises(ValueError, match="badhighvalue"):
        P.from_json('"10_badhighvalue"')


def test_span() -> None:
    p = P.span_inclusive("05", "10")
    assert (p.low, p.high) == (5, 0x10 + 1)
    with pytest.raises(ValueError, match="Not hex"):
        P.span_inclusive("Not hex", "10")


def test_query_bounds() -> None:
    u = P.universe(1)
    assert u.query_bounds(1) == ("00", "g")
    assert u.query_bounds(2) == ("0000", "0100")
    p = P.from_ints(10, 255)
    assert p.query_bounds(1) == ("0a", "ff")
    assert p.query_bounds(2) == ("000a", "00ff")


def test_query_bounds_key_space_edge() -> None:
    # LUCI's inKeySpace vectors, seen through query_bounds: 255 fits one byte, 256 does not.
    assert P(0, 255).query_bounds(1)[1] == "ff"
    assert P(0, 256).query_bounds(1)[1] == "g"
    assert P(0, 256).query_bounds(2)[1] == "0100"


def test_split_exact() -> None:
    assert P.universe(1).split(2) == [P(0, 128), P(128, 256)]


def test_split_rounding() -> None:
    assert P(0, 10).split(3) == [P(0, 4), P(4, 8), P(8, 10)]


def test_split_degenerate() -> None:
    assert P(0, 1).split(2) == [P(0, 1)]


def test_educated_split_after_ideal() -> None:
    ps = P.universe(1).educated_split_after("3f", 8, 8, 100)
    assert ps == [P(64, 128), P(128, 192), P(192, 256)]


def test_educated_split_after_max_shards() -> None:
    ps = P.universe(1).educated_split_after("3f", 8, 8, 2)
    assert ps == [P(64, 160), P(160, 256)]


def test_educated_split_after_rounding() -> None:
    ps = P.universe(1).educated_split_after("3f", 8, 10, 100)
    assert ps == [P(64, 128), P(128, 192), P(192, 256)]


def test_builder_luci_sequence() -> None:
    b = SortedPartitionsBuilder(P(0, 300))
    assert not b.is_empty()
    assert b.result() == [P(0, 300)]
    steps = [
        (P(100, 200), [P(0, 100), P(200, 300)]),
        (P(150, 175), [P(0, 100), P(200, 300)]),  # noop
        (P(150, 250), [P(0, 100), P(250, 300)]),  # cut front
        (P(275, 400), [P(0, 100), P(250, 275)]),  # cut back
        (P(40, 80), [P(0, 40), P(80, 100), P(250, 275)]),  # another split
        (P(10, 270), [P(0, 10), P(270, 275)]),
        (P(0, 4000), []),
    ]
    for exclude, want in steps:
        b.exclude(exclude)
        assert b.result() == want, f"after excluding {exclude}"
    assert b.is_empty()


def test_only_in() -> None:
    sp = SortedPartitions([P(1, 3), P(9, 16), P(241, 242)])

    def copy_in(*keys: str) -> list[str]:
        out: list[str] = []
        sp.only_in(len(keys), keys.__getitem__, lambda i, j: out.extend(keys[i:j]), 1)
        return out

    assert copy_in("00") == []
    assert copy_in("02") == ["02"]
    assert copy_in("00", "02", "03", "0f", "10", "40", "f0", "f1") == ["02", "0f", "f1"]


# -- Python additions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("zz_10", "invalid hex 'zz'"),
        ("10_zz", "invalid hex 'zz'"),
        ("0x1_10", "invalid hex '0x1'"),
        ("1__10", "invalid hex '_10'"),
        ("20_10", "low > high"),
        ("-1_10", "negative value '-1'"),
        (" 1_10", "invalid hex ' 1'"),
        ("", "invalid format"),
        ("10", "invalid format"),
    ],
)
def test_from_string_messages(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as e:
        P.from_string(text)
    assert repr(text) in str(e.value) or message in str(e.value)


def test_from_string_accepts_upper_case_and_leading_zeros() -> None:
    assert P.from_string("00A_0FF") == P(10, 255)


def test_constructor_validates() -> None:
    with pytest.raises(ValueError, match="low > high"):
        P(2, 1)
    with pytest.raises(ValueError, match=">= 0"):
        P(-1, 1)
    with pytest.raises(TypeError, match="low must be an int"):
        P(1.0, 2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="high must be an int"):
        P(1, True)


def test_immutable_and_hashable() -> None:
    p = P(1, 10)
    with pytest.raises(AttributeError):
        p.low = 5  # type: ignore[misc]
    assert {p: 1}[P(1, 10)] == 1
    assert pickle.loads(pickle.dumps(p)) == p


def test_big_keys() -> None:
    u = P.universe(32)  # SHA-256 key space
    assert u.high == 1 << 256
    assert P.from_string(str(u)) == u
    low, high = u.split(3)[1].query_bounds(32)
    assert len(low) == 64 and len(high) == 64


def test_span_inclusive_single_key() -> None:
    assert P.span_inclusive("ff", "ff") == P(255, 256)
    with pytest.raises(ValueError, match="low > high"):
        P.span_inclusive("10", "0e")


def test_query_bounds_low_outside_key_space() -> None:
    with pytest.raises(ValueError, match="outside"):
        P(256, 300).query_bounds(1)


def test_split_rejects() -> None:
    with pytest.raises(ValueError, match=">=1 shard"):
        P(0, 10).split(0)
    with pytest.raises(ValueError, match="empty partition"):
        P(5, 5).split(2)


def test_educated_split_after_rejects_and_edges() -> None:
    u = P.universe(1)
    with pytest.raises(ValueError, match="within the partition"):
        u.educated_split_after("100", 8, 8, 10)
    with pytest.raises(ValueError, match="within the partition"):
        P(16, 32).educated_split_after("0f", 8, 8, 10)
    with pytest.raises(ValueError, match="target_items"):
        u.educated_split_after("3f", 8, 0, 10)
    assert u.educated_split_after("ff", 8, 8, 10) == []  # nothing after the cut
    assert u.educated_split_after("3f", 0, 8, 10) == [P(64, 256)]  # no density known


def test_sorted_partitions_construction() -> None:
    sp = SortedPartitions([P(20, 30), P(0, 10), P(15, 15)])
    assert sp == [P(0, 10), P(20, 30)]
    assert sp[1:] == SortedPartitions([P(20, 30)])
    with pytest.raises(ValueError, match="overlap"):
        SortedPartitions([P(0, 10), P(5, 20)])
    with pytest.raises(TypeError):
        SortedPartitions(["0_10"])  # type: ignore[list-item]
    assert SortedPartitions.from_json(sp.to_json()) == sp
    assert SortedPartitions.from_strings(["14_1e", "0_a"]) == sp
    assert sp.contains_key(0) and sp.contains_key(29)
    assert not sp.contains_key(10) and not sp.contains_key(30)


def test_filter_sorted() -> None:
    sp = SortedPartitions([P(1, 3), P(9, 16), P(241, 256)])
    keys = ["00", "01", "02", "03", "0f", "10", "f0", "f1", "ff"]
    assert sp.filter_sorted(keys, 1) == ["01", "02", "0f", "f1", "ff"]


def test_builder_edges() -> None:
    b = SortedPartitionsBuilder(P(5, 5))
    assert b.is_empty() and b.result() == []
    b = SortedPartitionsBuilder(P(0, 10))
    b.exclude(P(5, 5))  # excluding nothing changes nothing
    assert b.result() == [P(0, 10)]
    b.exclude(P(10, 20))  # adjacent on the right
    b.exclude(P(0, 0))
    assert b.result() == [P(0, 10)]
