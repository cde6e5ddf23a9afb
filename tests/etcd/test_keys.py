"""Section ids escape into keys that cannot collide."""

from __future__ import annotations

import pytest

from lessor.etcd.keys import MAX_SECTION_ID_BYTES, SectionKeys, validate_prefix

IDS = ["a", "a/b", "a%2Fb", "a/", "/", "%", "ü", "日本", "s" * 1024, "a b", "..", "m/a", "s/a"]


def test_ids_map_to_distinct_keys_without_slashes() -> None:
    keys = [SectionKeys.of("/lessor/", i) for i in IDS]
    values = {k.value for k in keys}
    assert len(values) == len(IDS)
    for k in keys:
        escaped = k.value[len(b"/lessor/s/") :]
        assert b"/" not in escaped
        assert k.markers.startswith(b"/lessor/m/") and k.markers.endswith(b"/")
    # no section's marker range contains another section's markers
    for a in keys:
        for b in keys:
            if a is not b:
                assert not b.markers.startswith(a.markers)


def test_marker_round_trip_and_range() -> None:
    k = SectionKeys.of("/p/", "x")
    marker = k.marker(0x694D8A2B1C, 7)
    assert k.owner(marker) == (0x694D8A2B1C, 7)
    assert k.markers <= marker < k.markers_end
    assert k.owner(b"/p/m/x/garbage") is None
    assert k.owner(SectionKeys.of("/p/", "y").marker(1, 1)) is None


def test_too_long_and_bad_ids() -> None:
    SectionKeys.of("/p/", "x" * MAX_SECTION_ID_BYTES)
    with pytest.raises(ValueError, match="at most 4096"):
        SectionKeys.of("/p/", "x" * (MAX_SECTION_ID_BYTES + 1))
    with pytest.raises(ValueError, match="at most 4096"):
        SectionKeys.of("/p/", "ü" * 2049)  # 4098 bytes in UTF-8
    with pytest.raises(ValueError, match="not valid unicode"):
        SectionKeys.of("/p/", "\udc80")


@pytest.mark.parametrize("prefix", ["", "lessor", "/lessor"])
def test_prefix_must_end_with_slash(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        validate_prefix(prefix)
