"""lessor.checks: each check returns what it checked, or an error naming the argument and what
was given (the type for a TypeError), so every entry point fails alike for a bad argument."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from datetime import timedelta

import pytest

from lessor import Context, Partition, checks


@pytest.mark.parametrize(
    ("check", "error", "message"),
    [
        (lambda: checks.section_id(5), TypeError, "section_id must be a str, got int: 5"),
        (lambda: checks.section_id(""), ValueError, "section_id must not be empty, got ''"),
        (lambda: checks.context(None), TypeError, "ctx must be a lessor.Context, got NoneType"),
        (lambda: checks.partition("0_1", "part"), TypeError, "part must be a lessor.Partition"),
        (
            lambda: checks.partition(Partition(5, 5), "key_space", empty=False),
            ValueError,
            "key_space must not be empty, got 5_5",
        ),
        (lambda: checks.function(3, "cb"), TypeError, "cb must be callable, got int: 3"),
        (lambda: checks.flag(0, "share_leases"), TypeError, "share_leases must be a bool"),
        (lambda: checks.count(2.0, "shards"), TypeError, "shards must be an int, got float: 2.0"),
        (lambda: checks.count(True, "shards"), TypeError, "shards must be an int, got bool"),
        (lambda: checks.count(0, "shards"), ValueError, "shards must be positive, got 0"),
        (lambda: checks.count(-1, "probes", zero=True), ValueError, "probes must be >= 0"),
        (lambda: checks.duration("1", "dur"), TypeError, "dur must be float seconds or a"),
        (lambda: checks.duration(math.nan, "dur"), ValueError, "dur must be a number, got NaN"),
        (lambda: checks.duration(0, "dur"), ValueError, "dur must be positive and finite, got 0"),
        (lambda: checks.duration(math.inf, "margin", zero=True), ValueError, ">= 0 and finite"),
        (lambda: checks.duration(-0.1, "margin", zero=True), ValueError, "margin must be >= 0"),
        (
            lambda: checks.instance(1, "rng", random.Random, "a random.Random"),
            TypeError,
            "rng must be a random.Random, got int: 1",
        ),
    ],
)
def test_a_bad_argument_is_named_with_what_was_given(
    check: Callable[[], object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        check()


def test_a_good_argument_comes_back() -> None:
    ctx, part = Context.background(), Partition(0, 1)
    assert checks.context(ctx) is ctx
    assert checks.partition(part, "part") is part
    assert checks.section_id("s") == "s"
    assert checks.count(0, "n", zero=True) == 0 and checks.count(3, "n") == 3
    assert checks.duration(timedelta(milliseconds=1500), "dur") == 1.5
    assert checks.duration(0, "margin", zero=True) == 0.0
    assert isinstance(checks.duration(2, "dur"), float)
    assert checks.flag(False, "f") is False
