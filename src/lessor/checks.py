"""Argument checks, written once: each returns the checked value or raises an error naming it.

Every public entry point checks its arguments before anything reaches a backend, and the same
kind of argument fails the same way wherever it is given: a :class:`TypeError` for the wrong
type, a :class:`ValueError` for a value out of range, each message starting with the
argument's name and ending with what was given (``"shards must be an int, got float: 2.0"``).

This module is internal: the checks are the library's, not part of its API.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import TypeVar

from lessor.context import Context, seconds
from lessor.partition import Partition

__all__ = [
    "context",
    "count",
    "duration",
    "flag",
    "function",
    "got",
    "instance",
    "partition",
    "section_id",
    "wrong_type",
]

T = TypeVar("T")


def got(value: object) -> str:
    """How a message shows what was given: its type, then its repr."""
    return f"{type(value).__name__}: {value!r}"


def wrong_type(value: object, name: str, what: str) -> TypeError:
    """The error for an argument ``name`` that is not ``what`` (for a check made by hand, such
    as one against an abstract class, which :func:`instance` cannot take)."""
    return TypeError(f"{name} must be {what}, got {got(value)}")


def instance(value: object, name: str, kind: type[T], what: str) -> T:
    """``value`` if it is a ``kind`` (``what`` says so in the error), else a TypeError."""
    if not isinstance(value, kind):
        raise wrong_type(value, name, what)
    return value


def context(value: object, name: str = "ctx") -> Context:
    """A :class:`~lessor.context.Context`."""
    return instance(value, name, Context, "a lessor.Context")


def partition(value: object, name: str, *, empty: bool = True) -> Partition:
    """A :class:`~lessor.partition.Partition`; a non-empty one unless ``empty``."""
    part = instance(value, name, Partition, "a lessor.Partition")
    if not empty and part.is_empty():
        raise ValueError(f"{name} must not be empty, got {part}")
    return part


def section_id(value: object, name: str = "section_id") -> str:
    """A section id: a non-empty str."""
    if not isinstance(value, str):
        raise wrong_type(value, name, "a str")
    if not value:
        raise ValueError(f"{name} must not be empty, got {value!r}")
    return value


def function(value: T, name: str) -> T:
    """Something callable."""
    if not callable(value):
        raise wrong_type(value, name, "callable")
    return value


def flag(value: object, name: str) -> bool:
    """A bool (not merely something truthy)."""
    return instance(value, name, bool, "a bool")


def count(value: object, name: str, *, zero: bool = False) -> int:
    """An int above 0 (or 0 too, with ``zero``); a bool is not a count."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong_type(value, name, "an int")
    if value < 0 or (value == 0 and not zero):
        raise ValueError(f"{name} must be {'>= 0' if zero else 'positive'}, got {value}")
    return value


def duration(value: float | timedelta, name: str, *, zero: bool = False) -> float:
    """Seconds, as a float: float seconds or a :class:`~datetime.timedelta`, above 0 (or 0
    too, with ``zero``) and finite."""
    result = seconds(value, name)  # the TypeError, and the ValueError for NaN
    if not (result >= 0 if zero else result > 0) or result == math.inf:
        raise ValueError(
            f"{name} must be {'>= 0' if zero else 'positive'} and finite, got {value!r}"
        )
    return result
