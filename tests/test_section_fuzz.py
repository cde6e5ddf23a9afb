"""Fuzzing the stored section value: whatever etcd hands back, decode answers quickly.

Any bytes either decode to entries or raise CorruptSection naming the section, with a short
message; nothing else escapes (a RecursionError once did, from ``b"[" * 100000``). Values
shaped like ours, with wrong types, huge numbers and deep nesting mixed in, find the corners
that random bytes miss. Every example has a deadline, so a slow input fails too.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from lessor import CorruptSection, Partition, SortedPartitions
from lessor.etcd import section

FAST = settings(max_examples=200, deadline=timedelta(milliseconds=500))


def text_of(characters: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Text that is hard on a scanner of JSON: brackets, quotes and backslashes inside strings."""
    return st.text(st.one_of(st.sampled_from('[]{}"\\'), characters), max_size=8)


texts = text_of(st.characters())  # lone surrogates too
holders = text_of(st.characters(codec="utf-8"))  # what a holder marker can hold


@st.composite
def disjoint_ranges(draw: st.DrawFn) -> SortedPartitions:
    bounds = sorted(draw(st.sets(st.integers(0, 2**260), max_size=8)))  # an odd last one unused
    lows, highs = bounds[::2], bounds[1::2]
    return SortedPartitions(Partition(lo, hi) for lo, hi in zip(lows, highs, strict=False))


hex_text = st.integers(0, 2**300).map(lambda n: format(n, "x"))
range_like = st.one_of(
    st.tuples(hex_text, hex_text).map("_".join),
    st.text("0123456789abcdefABCDEF_-xz ", max_size=12),
)
numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**63 - 1, 2**63, -1, 0, 1, 10**30]),
    st.floats(),  # NaN and infinities included: json writes and reads them
    st.booleans(),
)
KEYS = ["v", "leases", "lease", "seq", "ranges", "holder"]
json_values = st.recursive(
    st.one_of(st.none(), numbers, texts, range_like),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), texts), inner, max_size=5),
    ),
    max_leaves=20,
)


def right_or_wrong(right: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually a field's right kind of value, sometimes any value at all."""
    return st.one_of(right, right, right, json_values)


def some_fields(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Usually every field, sometimes only some."""
    every = st.fixed_dictionaries(fields)
    return st.one_of(every, every, st.fixed_dictionaries({}, optional=fields))


entry_like = some_fields(
    {
        "lease": right_or_wrong(st.integers(0, 2**63 - 1)),
        "seq": right_or_wrong(st.integers(0, 2**63 - 1)),
        "ranges": right_or_wrong(
            st.one_of(disjoint_ranges().map(SortedPartitions.to_strings), st.lists(range_like))
        ),
        "holder": right_or_wrong(holders),
    }
)
value_like = some_fields(
    {
        "v": right_or_wrong(st.just(1)),
        "leases": right_or_wrong(st.lists(right_or_wrong(entry_like), max_size=4)),
    }
)


entries = st.lists(
    st.builds(
        section.Entry,
        lease=st.integers(0, 2**63 - 1),
        seq=st.integers(0, 2**63 - 1),
        ranges=disjoint_ranges(),
        holder=holders,
    ),
    max_size=5,
)


def dumps(value: Any, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@st.composite
def hostile(draw: st.DrawFn) -> bytes:
    """A value shaped like ours, then perhaps nested deep, given a huge number or cut short."""
    written = entries.map(lambda es: json.loads(section.encode(es)))
    raw = dumps(draw(st.one_of(written, value_like, json_values)), draw(st.booleans()))
    how = draw(st.sampled_from(["as is"] * 4 + ["nested", "unclosed", "huge number", "cut"]))
    if how in ("nested", "unclosed"):
        depth = draw(st.sampled_from([1, 5, 9, 1000, 30_000]))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"v":', b"}"), (b'["]",', b"]")]))
        raw = opener * depth + raw + (closer * depth if how == "nested" else b"")
    elif how == "huge number":
        digits = draw(st.sampled_from([19, 20, 4300, 4301, 50_000]))
        raw = raw.replace(b"1", b"1" * digits, 1)
    elif how == "cut":
        raw = raw[: draw(st.integers(0, len(raw)))]
    return raw


def decodes_or_is_corrupt(raw: bytes) -> None:
    try:
        entries = section.decode("fuzzed", raw)
    except CorruptSection as e:
        assert "'fuzzed'" in str(e) and len(str(e)) < 1000
        event("corrupt")
        return
    event("decoded")
    assert section.decode("fuzzed", section.encode(entries)) == entries


@FAST
@given(st.binary(max_size=2000))
def test_any_bytes_decode_or_are_corrupt(raw: bytes) -> None:
    decodes_or_is_corrupt(raw)


@FAST
@given(hostile())
def test_values_shaped_like_ours_decode_or_are_corrupt(raw: bytes) -> None:
    decodes_or_is_corrupt(raw)


def depth(value: Any) -> int:
    if isinstance(value, list | dict):
        inside = value.values() if isinstance(value, dict) else value
        return 1 + max((depth(v) for v in inside), default=0)
    return 0


@FAST
@given(json_values, st.integers(0, 6), st.booleans())
def test_only_values_nested_too_deep_are_refused_unparsed(
    value: Any, wrap: int, ascii_only: bool
) -> None:
    for _ in range(wrap):
        value = {"leases": [value]}
    too_deep = depth(value) > section.MAX_DEPTH
    try:
        section.decode("s", dumps(value, ascii_only))
    except CorruptSection as e:
        assert ("nested deeper than" in str(e)) == too_deep, str(e)
    else:
        assert not too_deep


@FAST
@given(entries)
def test_entries_round_trip(written: list[section.Entry]) -> None:
    assert section.decode("s", section.encode(written)) == written
