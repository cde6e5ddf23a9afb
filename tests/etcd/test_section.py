"""The stored section value: round trip, and every way it can be unreadable."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

import pytest

from lessor import CorruptSection, SortedPartitions
from lessor.etcd import section


def test_round_trip() -> None:
    entries = [
        section.Entry(0x1234, 1, SortedPartitions.from_strings(["0_10", "20_30"]), "host:1"),
        section.Entry(0x5678, 9, SortedPartitions.from_strings(["ff_100"]), "other:2"),
    ]
    raw = section.encode(entries)
    assert raw.startswith(b'{"v":1,')
    assert section.decode("s", raw) == entries


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"garbage", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"v": 2, "leases": []}', "format version 2"),
        (b'{"leases": []}', "format version None"),
        (b'{"v": 1}', "'leases' is not a list"),
        (b'{"v": 1, "leases": [{"lease": 1}]}', "bad entry"),
        (b'{"v": 1, "leases": ["x"]}', "bad entry"),
        (b'{"v": 1, "leases": [{"lease": "1", "seq": 1, "ranges": [], "holder": ""}]}', "integers"),
        (
            b'{"v": 1, "leases": [{"lease": 1, "seq": 1, "ranges": ["zz_1"], "holder": ""}]}',
            "invalid hex",
        ),
        (
            b'{"v": 1, "leases": [{"lease": 1, "seq": 1, "ranges": ["0_5", "2_9"], "holder": ""}]}',
            "overlap",
        ),
        (b"\xff\xfe", "not JSON"),
        (b'{"v": 1, "leases": [1]}', "bad entry"),
        (b'{"v": 1, "leases": [{"lease": 1.5, "seq": 1, "ranges": [], "holder": ""}]}', "integers"),
        (b'{"v": 1, "leases": [{"lease": NaN, "seq": 1, "ranges": [], "holder": ""}]}', "integers"),
        (b'{"v": 1, "leases": [{"lease": 1, "seq": 1, "ranges": [], "holder": 7}]}', "holder"),
        (b'{"v": 1, "leases": [{"lease": 1, "seq": 1, "ranges": "0_1", "holder": ""}]}', "ranges"),
        (b'{"v": 1, "leases": [], "x": ' + b"1" * 5000 + b"}", "not JSON"),  # Python's own cap
        (b"[}", "not JSON"),
    ],
)
def test_corrupt_values_name_the_section(raw: bytes, why: str) -> None:
    with pytest.raises(CorruptSection, match=why) as e:
        section.decode("the-section", raw)
    assert "'the-section'" in str(e.value)


def test_the_largest_ids_round_trip() -> None:
    entries = [section.Entry(2**63 - 1, 2**63 - 1, SortedPartitions.from_strings([]), "")]
    assert section.decode("s", section.encode(entries)) == entries


# Regressions: each of these values once escaped decode as another error (RecursionError),
# was accepted, or made an error message as large as itself.

DEEP = {
    "arrays": b"[" * 100_000,
    "objects": b'{"a":' * 100_000,
    "balanced": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "in leases": b'{"v": 1, "leases": ' + b"[" * 100_000,
    "brackets in strings": b'["]",' * 50_000,  # a string's brackets hide no nesting
    "escaped quotes": b'["\\"]",' * 50_000,  # nor does an escaped quote end a string
    "escaped backslashes": b'["\\\\",' * 50_000,  # nor does an escaped backslash escape it
    "utf-16": ("[" * 100_000).encode("utf-16"),
}


@pytest.mark.parametrize("raw", DEEP.values(), ids=DEEP.keys())
def test_deep_nesting_is_corrupt_not_a_recursion_error(raw: bytes) -> None:
    with pytest.raises(CorruptSection, match="nested deeper than") as e:
        section.decode("the-section", raw)
    assert "'the-section'" in str(e.value)


def entry(**fields: bytes) -> bytes:
    """A value of one entry, with some of its fields' JSON replaced."""
    parts = {"lease": b"1", "seq": b"1", "ranges": b'["0_10"]', "holder": b'"h"'} | fields
    inner = b",".join(b'"%s":%s' % (k.encode(), v) for k, v in parts.items())
    return b'{"v":1,"leases":[{%s}]}' % inner


HOSTILE = {
    "v true": (b'{"v": true, "leases": []}', "format version True"),
    "v float": (b'{"v": 1.0, "leases": []}', "format version 1.0"),
    "lease past int64": (entry(lease=b"9223372036854775808"), r"not in \[0, 2\*\*63\)"),
    "negative lease": (entry(lease=b"-1"), r"not in \[0, 2\*\*63\)"),
    "negative seq": (entry(seq=b"-5"), r"not in \[0, 2\*\*63\)"),
    "utf-16": ('{"v": 1, "leases": []}'.encode("utf-16"), "not JSON"),
    "3 MiB": (entry(holder=b'"%s"' % (b"h" * 3 * 2**20)), "bytes, more than"),
    "unencodable holder": (entry(holder=b'"\\ud800"'), "surrogates not allowed"),
}


@pytest.mark.parametrize(("raw", "why"), HOSTILE.values(), ids=HOSTILE.keys())
def test_values_we_never_write_are_corrupt(raw: bytes, why: str) -> None:
    with pytest.raises(CorruptSection, match=why) as e:
        section.decode("the-section", raw)
    assert "'the-section'" in str(e.value)


@pytest.fixture
def int_cap_lifted() -> Iterator[None]:
    """Python's cap on int(str) lifted, as an application may do."""
    before = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    yield
    sys.set_int_max_str_digits(before)


@pytest.mark.usefixtures("int_cap_lifted")
def test_long_numbers_are_corrupt_even_where_python_allows_them() -> None:
    # int() of n digits takes time quadratic in n: 300,000 take most of a second, 2 MiB minutes.
    with pytest.raises(CorruptSection, match="a number of 300000 digits"):
        section.decode("s", entry(lease=b"1" * 300_000))


HUGE = {
    "bad range": entry(ranges=b'["%s_1"]' % (b"z" * 2**20)),
    "bad lease, long holder": entry(lease=b'"1"', holder=b'"%s"' % (b"h" * 2**20)),
    "long version": b'{"v": "%s", "leases": []}' % (b"9" * 2**20),
}


@pytest.mark.parametrize("raw", HUGE.values(), ids=HUGE.keys())
def test_error_messages_stay_short(raw: bytes) -> None:
    with pytest.raises(CorruptSection) as e:
        section.decode("the-section", raw)
    assert "'the-section'" in str(e.value) and len(str(e.value)) < 1000


# The bounds themselves: what lies within them is parsed, whatever its cost.


def test_json_parses_values_as_deep_as_allowed() -> None:
    depth = section.MAX_DEPTH
    with pytest.raises(CorruptSection, match="not a JSON object"):
        section.decode("s", b"[" * depth + b"]" * depth)
    with pytest.raises(CorruptSection, match="format version None"):
        section.decode("s", b'{"a":[' * (depth // 2) + b"]}" * (depth // 2))
    with pytest.raises(CorruptSection, match="nested deeper than"):
        section.decode("s", b"[" * (depth + 1) + b"]" * (depth + 1))


def test_values_up_to_the_size_bound_are_read() -> None:
    fill = section.MAX_VALUE_BYTES - len(entry(holder=b'""'))
    largest = entry(holder=b'"%s"' % (b"h" * fill))
    assert len(largest) == section.MAX_VALUE_BYTES
    assert section.decode("s", largest)[0].holder == "h" * fill
    with pytest.raises(CorruptSection, match=f"{len(largest) + 1} bytes, more than"):
        section.decode("s", entry(holder=b'"%s"' % (b"h" * (fill + 1))))


ENTRY_HEAD = b'{"v":1,"leases":[{"lease":1,"seq":1,"holder":"","ranges":['
COSTLY = {  # the shapes that cost decode most, as (head, unit, tail): units fill the size bound
    "nested containers": (b"[", b"[[[[[[[]]]]]]]", b"]"),
    "many ranges": (ENTRY_HEAD, b'"1_1"', b"]}]}"),
    "many entries": (b'{"v":1,"leases":[', b'{"lease":1,"seq":1,"ranges":[],"holder":""}', b"]}"),
    "escapes": (b'["', b'\\"', b'"]'),
    "quotes": (b"", b'"\\', b""),
}


@pytest.mark.parametrize(("head", "unit", "tail"), COSTLY.values(), ids=COSTLY.keys())
def test_the_costliest_values_decode_in_bounded_time(head: bytes, unit: bytes, tail: bytes) -> None:
    units = (section.MAX_VALUE_BYTES - len(head) - len(tail)) // (len(unit) + 1)
    raw = head + b",".join([unit] * units) + tail
    started = time.process_time()
    with contextlib.suppress(CorruptSection):
        section.decode("s", raw)
    assert time.process_time() - started < 10  # about 1 s of CPU on a 2-core test machine
