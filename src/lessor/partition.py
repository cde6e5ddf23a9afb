"""Partitions of a key space too large for any fixed-width integer.

A :class:`Partition` is the half-open range ``[low, high)`` of non-negative integers. Keys are
the integers themselves, usually written as fixed-width lowercase hex strings (a SHA-256 key
space has 32 bytes, so its keys are 64 hex digits). All text forms use hex.

This is LUCI's ``server/tq/internal/partition`` package in Python. Where Go panics on input
it cannot handle, Python raises :class:`ValueError` naming the input; where the two differ
in behaviour, the docstring says so.

One module of just over 400 lines, on purpose: it is one concept, as LUCI's package is one
file (``partition.go``). Its three types are one vocabulary and lean on each other:
:meth:`Partition.split` returns :class:`SortedPartitions`, and both the split and
:class:`SortedPartitionsBuilder` hand their pieces to :class:`SortedPartitions` unchecked
(``_trusted``), which only this module may do. Apart, they would import each other and reach
into each other's private constructor. The JSON form is a pair of methods on each type.
"""

from __future__ import annotations

import bisect
import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final, overload

__all__ = ["Partition", "SortedPartitions", "SortedPartitionsBuilder"]

_HEX: Final = re.compile(r"[0-9a-fA-F]+")


def _parse_hex(text: str, what: str) -> int:
    # int(text, 16) alone also accepts "0x", "_", signs and whitespace; the text form does not.
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a hex str, got {type(text).__name__}: {text!r}")
    if text.startswith("-") and _HEX.fullmatch(text[1:]):
        raise ValueError(f"negative value {text!r} not allowed in {what}")
    if not _HEX.fullmatch(text):
        raise ValueError(f"invalid hex {text!r} in {what}")
    return int(text, 16)


def _check_key_space(key_space_bytes: int) -> None:
    if isinstance(key_space_bytes, bool) or not isinstance(key_space_bytes, int):
        raise TypeError(f"key_space_bytes must be an int, got {key_space_bytes!r}")
    if key_space_bytes <= 0:
        raise ValueError(f"key_space_bytes must be positive, got {key_space_bytes}")


def _padded_hex(value: int, key_space_bytes: int) -> str:
    return format(value, "x").zfill(key_space_bytes * 2)


class Partition:
    """The half-open range ``[low, high)`` of non-negative integers; immutable.

    ``low == high`` is a valid, empty partition. Equality and hashing are by value.
    ``str(p)`` is the text form ``"<low>_<high>"`` in lowercase hex without padding,
    e.g. ``str(Partition(5, 64)) == "5_40"``; :meth:`from_string` parses it back.
    """

    __slots__ = ("_high", "_low")

    _low: int
    _high: int

    def __init__(self, low: int, high: int) -> None:
        for name, value in (("low", low), ("high", high)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"partition {name} must be an int, got {value!r}")
        if low < 0:
            raise ValueError(f"partition low must be >= 0, got {low}")
        if low > high:
            raise ValueError(f"partition {low}..{high} is invalid: low > high")
        object.__setattr__(self, "_low", low)
        object.__setattr__(self, "_high", high)

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_ints(cls, low: int, high: int) -> Partition:
        """``[low, high)``; the same as the constructor, named as in Go."""
        return cls(low, high)

    @classmethod
    def span_inclusive(cls, low: str, high_inclusive: str) -> Partition:
        """The smallest partition holding both hex keys: ``[low, high_inclusive + 1)``."""
        lo = _parse_hex(low, "span low")
        hi = _parse_hex(high_inclusive, "span high") + 1
        if lo > hi:
            raise ValueError(f"span {low!r}..{high_inclusive!r} is invalid: low > high")
        return cls(lo, hi)

    @classmethod
    def universe(cls, key_space_bytes: int) -> Partition:
        """Every key of ``key_space_bytes`` bytes: ``[0, 2**(8*key_space_bytes))``."""
        _check_key_space(key_space_bytes)
        return cls(0, 1 << (key_space_bytes * 8))

    @classmethod
    def from_string(cls, text: str) -> Partition:
        """Parse the text form ``"<low hex>_<high hex>"``, e.g. ``"f0_ff"``."""
        if not isinstance(text, str):
            raise TypeError(f"partition text must be a str, got {type(text).__name__}: {text!r}")
        i = text.find("_")
        if i <= 0 or i == len(text) - 1:
            raise ValueError(f"partition {text!r} has invalid format, want '<low hex>_<high hex>'")
        low = _parse_hex(text[:i], f"partition {text!r}")
        high = _parse_hex(text[i + 1 :], f"partition {text!r}")
        if low > high:
            raise ValueError(f"partition {text!r} is invalid: low > high")
        return cls(low, high)

    @classmethod
    def from_json(cls, text: str | bytes) -> Partition | None:
        """Parse the JSON form (a JSON string holding the text form); JSON ``null`` gives None."""
        try:
            value = json.loads(text)
        except ValueError as e:
            raise ValueError(f"invalid JSON-serialized partition {text!r}: {e}") from None
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError(f"invalid JSON-serialized partition {text!r}: not a string")
        return cls.from_string(value)

    # -- attributes --------------------------------------------------------------------------

    @property
    def low(self) -> int:
        """The first key in the partition."""
        return self._low

    @property
    def high(self) -> int:
        """The first key past the partition (exclusive)."""
        return self._high

    def is_empty(self) -> bool:
        return self._low == self._high

    def __contains__(self, key: object) -> bool:
        return isinstance(key, int) and self._low <= key < self._high

    def overlaps(self, other: Partition) -> bool:
        """Whether the two partitions share at least one key."""
        return self._low < other._high and other._low < self._high

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Partition is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Partition):
            return NotImplemented
        return self._low == other._low and self._high == other._high

    def __hash__(self) -> int:
        return hash((self._low, self._high))

    def __repr__(self) -> str:
        return f"Partition({self._low:#x}, {self._high:#x})"

    def __str__(self) -> str:
        return f"{self._low:x}_{self._high:x}"

    def __reduce__(self) -> tuple[type[Partition], tuple[int, int]]:
        return (Partition, (self._low, self._high))

    def to_json(self) -> str:
        """The JSON form: the text form as a JSON string, e.g. ``'"5_40"'``."""
        return f'"{self}"'

    # -- operations --------------------------------------------------------------------------

    def query_bounds(self, key_space_bytes: int) -> tuple[str, str]:
        """Bounds for a database query over keys stored as padded hex strings.

        Returns ``(low, high)`` with ``low <= key < high`` holding exactly for the keys in the
        partition. ``high`` is ``"g"`` (greater than every hex string) when the partition ends
        past the key space, i.e. at ``2**(8*key_space_bytes)``.
        """
        _check_key_space(key_space_bytes)
        if self._low.bit_length() > key_space_bytes * 8:
            raise ValueError(f"partition {self} starts outside a {key_space_bytes}-byte key space")
        low = _padded_hex(self._low, key_space_bytes)
        if self._high.bit_length() > key_space_bytes * 8:
            return low, "g"
        return low, _padded_hex(self._high, key_space_bytes)

    def split(self, shards: int) -> SortedPartitions:
        """Split into at most ``shards`` contiguous partitions of (nearly) equal size.

        Each part but the last has ``ceil(len / shards)`` keys, so fewer parts come back when
        the partition has fewer keys than ``shards``. Go panics on an empty partition; this
        raises :class:`ValueError`.
        """
        if isinstance(shards, bool) or not isinstance(shards, int):
            raise TypeError(f"shards must be an int, got {shards!r}")
        if shards <= 0:
            raise ValueError(f">=1 shard required, got {shards}")
        if self.is_empty():
            raise ValueError(f"cannot split the empty partition {self}")
        increment = -(-(self._high - self._low) // shards)  # ceil division
        bounds = range(self._low, self._high, increment)
        parts = [Partition(lo, min(lo + increment, self._high)) for lo in bounds]
        return SortedPartitions._trusted(parts)

    def educated_split_after(
        self, exclusive: str, before_items: int, target_items: int, max_shards: int
    ) -> SortedPartitions:
        """Split what follows key ``exclusive`` into shards of about ``target_items`` each.

        Assumes the density observed before the cut (``before_items`` keys in
        ``[low, exclusive]``) holds for the rest, and caps the number of shards at
        ``max_shards``. ``exclusive`` must lie in the partition. Where Go would split into zero
        shards (``before_items == 0``) this returns the remainder whole; when nothing follows
        ``exclusive`` it returns no partitions.
        """
        for name, value in (
            ("before_items", before_items),
            ("target_items", target_items),
            ("max_shards", max_shards),
        ):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {value!r}")
        if before_items < 0:
            raise ValueError(f"before_items must be >= 0, got {before_items}")
        if target_items <= 0:
            raise ValueError(f"target_items must be > 0, got {target_items}")
        if max_shards <= 0:
            raise ValueError(f"max_shards must be > 0, got {max_shards}")
        cut = _parse_hex(exclusive, "educated_split_after cut")
        if not self._low <= cut < self._high:
            raise ValueError(f"cut {exclusive!r} must be within the partition {self}")
        remaining = Partition(cut + 1, self._high)
        if remaining.is_empty():
            return SortedPartitions()
        # before_items / len(before) * len(remaining) / target_items, rounded up, in integers.
        numerator = before_items * (remaining._high - remaining._low)
        denominator = target_items * (remaining._low - self._low)
        expected = -(-numerator // denominator)
        return remaining.split(max(1, min(max_shards, expected)))


class SortedPartitions(Sequence[Partition]):
    """Disjoint partitions sorted by ascending ``low``; an immutable sequence.

    Built from any iterable of partitions: they are sorted, and overlapping ones raise
    :class:`ValueError`. Empty partitions are dropped, since they hold no key.
    """

    __slots__ = ("_parts",)

    _parts: tuple[Partition, ...]

    def __init__(self, parts: Iterable[Partition] = ()) -> None:
        items = []
        for p in parts:
            if not isinstance(p, Partition):
                raise TypeError(f"SortedPartitions holds Partition objects, got {p!r}")
            if not p.is_empty():
                items.append(p)
        items.sort(key=lambda p: p.low)
        for a, b in itertools.pairwise(items):
            if a.high > b.low:
                raise ValueError(f"partitions {a} and {b} overlap")
        self._parts = tuple(items)

    @classmethod
    def _trusted(cls, parts: Iterable[Partition]) -> SortedPartitions:
        """Wrap partitions already known to be sorted, disjoint and non-empty."""
        obj = cls.__new__(cls)
        obj._parts = tuple(parts)
        return obj

    @classmethod
    def from_strings(cls, texts: Iterable[str]) -> SortedPartitions:
        """Build from text forms such as ``["5_40", "80_100"]``."""
        return cls(Partition.from_string(t) for t in texts)

    @classmethod
    def from_json(cls, text: str | bytes) -> SortedPartitions:
        """Parse a JSON list of partition text forms."""
        try:
            value = json.loads(text)
        except ValueError as e:
            raise ValueError(f"invalid JSON-serialized partitions {text!r}: {e}") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"invalid JSON-serialized partitions {text!r}: want a list of str")
        return cls.from_strings(value)

    def to_strings(self) -> list[str]:
        return [str(p) for p in self._parts]

    def to_json(self) -> str:
        return json.dumps(self.to_strings())

    @overload
    def __getitem__(self, index: int) -> Partition: ...
    @overload
    def __getitem__(self, index: slice) -> SortedPartitions: ...
    def __getitem__(self, index: int | slice) -> Partition | SortedPartitions:
        if isinstance(index, slice):
            return SortedPartitions._trusted(self._parts[index])
        return self._parts[index]

    def __len__(self) -> int:
        return len(self._parts)

    def __iter__(self) -> Iterator[Partition]:
        return iter(self._parts)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SortedPartitions):
            return self._parts == other._parts
        if isinstance(other, (list, tuple)):
            return list(self._parts) == list(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._parts)

    def __repr__(self) -> str:
        return f"SortedPartitions({[str(p) for p in self._parts]!r})"

    def __reduce__(self) -> tuple[type[SortedPartitions], tuple[tuple[Partition, ...]]]:
        return (SortedPartitions, (self._parts,))

    def contains_key(self, key: int) -> bool:
        """Whether integer ``key`` lies in one of the partitions (binary search)."""
        i = bisect.bisect_right(self._parts, key, key=lambda p: p.low) - 1
        return i >= 0 and key < self._parts[i].high

    def only_in(
        self,
        n: int,
        key: Callable[[int], str],
        use: Callable[[int, int], None],
        key_space_bytes: int,
    ) -> None:
        """Select, from ``n`` objects sorted by key, those whose key lies in the partitions.

        ``key(i)`` is object ``i``'s key as padded lowercase hex (the form
        :meth:`Partition.query_bounds` uses); ``use(i, j)`` is called for each run
        ``objects[i:j]`` inside one partition, in ascending order. Each partition costs two
        binary searches.
        """
        k = 0
        for p in self._parts:
            if k >= n:
                return
            low, high = p.query_bounds(key_space_bytes)
            first = bisect.bisect_left(range(k, n), low, key=key) + k
            if first == n:
                return
            end = bisect.bisect_left(range(first, n), high, key=key) + first
            if end > first:
                use(first, end)
            k = end

    def filter_sorted(self, keys: Sequence[str], key_space_bytes: int) -> list[str]:
        """The keys of sorted hex ``keys`` that lie inside the partitions, in order."""
        out: list[str] = []
        self.only_in(
            len(keys), keys.__getitem__, lambda i, j: out.extend(keys[i:j]), key_space_bytes
        )
        return out


class SortedPartitionsBuilder:
    """Builds sorted partitions by excluding ranges from a starting partition.

    LUCI keeps a linked list, so each exclusion costs O(n) in the number of pieces. This
    keeps the pieces' bounds in two sorted arrays: an exclusion finds the pieces it touches by
    binary search, O(log n) comparisons, and replaces them in one slice assignment (a memmove
    of pointers, even when it touches many pieces).
    """

    __slots__ = ("_highs", "_lows")

    def __init__(self, p: Partition) -> None:
        if not isinstance(p, Partition):
            raise TypeError(f"SortedPartitionsBuilder needs a Partition, got {p!r}")
        self._lows: list[int] = [] if p.is_empty() else [p.low]
        self._highs: list[int] = [] if p.is_empty() else [p.high]

    def exclude(self, exclude: Partition) -> None:
        """Remove the keys of ``exclude``; excluding an empty partition changes nothing."""
        lo, hi = exclude.low, exclude.high
        if lo >= hi:
            return
        i = bisect.bisect_right(self._highs, lo)  # first piece ending after lo
        j = bisect.bisect_left(self._lows, hi, i)  # first piece starting at or after hi
        if i >= j:
            return
        new_lows: list[int] = []
        new_highs: list[int] = []
        if self._lows[i] < lo:
            new_lows.append(self._lows[i])
            new_highs.append(lo)
        if self._highs[j - 1] > hi:
            new_lows.append(hi)
            new_highs.append(self._highs[j - 1])
        self._lows[i:j] = new_lows
        self._highs[i:j] = new_highs

    def is_empty(self) -> bool:
        return not self._lows

    def result(self) -> SortedPartitions:
        """The remaining pieces; the builder stays usable."""
        return SortedPartitions._trusted(map(Partition, self._lows, self._highs))
