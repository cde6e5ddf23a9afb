"""The stored section value: round trip, and every way it can be unreadable."""

from __future__ import annotations

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
    ],
)
def test_corrupt_values_name_the_section(raw: bytes, why: str) -> None:
    with pytest.raises(CorruptSection, match=why) as e:
        section.decode("the-section", raw)
    assert "'the-section'" in str(e.value)
