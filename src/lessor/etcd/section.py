"""The stored value of one section: its leases, as JSON, versioned.

    {"v": 1, "leases": [{"lease": <etcd lease id>, "seq": <acquisition number>,
                         "ranges": ["lo_hi", ...], "holder": "<label>"}]}

An entry counts as live only while its holder marker (keys.py) exists: the marker is attached
to the entry's etcd lease, so etcd's lease clock, not any client's wall clock, decides when an
entry dies. Writers drop entries whose markers they saw gone.

The entry's fencing token is not in the value: it is the revision of the transaction that wrote
the entry, which no writer can know before it commits. etcd keeps it as the marker's create
revision, where it cannot drift from the truth.

A value that cannot be decoded raises :class:`~lessor.errors.CorruptSection` naming the
section; nothing here ever replaces it.
"""

from __future__ import annotations

import json
import reprlib
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from lessor.errors import CorruptSection
from lessor.etcd.keys import Owner
from lessor.partition import Partition, SortedPartitions

__all__ = [
    "FORMAT_VERSION",
    "MAX_DEPTH",
    "MAX_INT_DIGITS",
    "MAX_VALUE_BYTES",
    "Entry",
    "decode",
    "encode",
]

FORMAT_VERSION = 1

MAX_VALUE_BYTES: Final = 2 * 1024 * 1024
"""The largest value :func:`decode` reads; a larger one is corrupt.

A writer stores no more than etcd's request limit lets it (``--max-request-bytes``, 1.5 MiB by
default): far more than :data:`~lessor.etcd.MAX_LIVE_LEASES` (100) entries need in practice,
about 30 KiB with one or two 256-bit ranges each. A read returns no more than our gRPC receive
limit (8 MiB). 2 MiB reads whatever a default etcd accepted, and bounds what a hostile value
costs: the costliest shapes take about a second of CPU and 80 MB to decode (see
``tests/etcd/test_section.py``).
"""

MAX_DEPTH: Final = 8
"""How deeply a value's arrays and objects may nest; a deeper one is corrupt, unparsed.

Format 1 nests 4 deep (``{"leases": [{"ranges": [...]}]}``); twice that leaves room for a later
format to be reported by its version, while keeping ``json`` far from Python's recursion limit
(``b"[" * 100000`` made it raise :class:`RecursionError`).
"""

MAX_INT_DIGITS: Final = sys.int_info.default_max_str_digits
"""The most digits a number in a value may have (4300: Python's default cap on ``int(str)``).

Every number we write is an int64 (lease and seq are range-checked once parsed); the bound is
on time: ``int()`` of a long digit string costs time quadratic in its length (300,000 digits
take most of a second). Python's cap applies it while json parses; where an application lifted
or raised that cap (``sys.set_int_max_str_digits``), :func:`decode` applies it itself.
"""

_INT64_END: Final = 1 << 63  # etcd lease ids are positive int64; acquisition numbers fit too
_SHOWN: Final = 200  # characters of a reason an error message shows at most

# What _too_deep keeps of a value: quotes, and brackets all written '[' or ']' (json itself
# checks which kind closes which; the depth is all that is left to bound). In UTF-8 these
# bytes, and '\\', occur only as themselves, never inside another character.
_BRACKETS: Final = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b'[]{}"')

_REPR: Final = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist = 3, 6, 4
_REPR.maxstring = _REPR.maxlong = _REPR.maxother = 40


@dataclass(frozen=True, slots=True)
class Entry:
    """One acquisition recorded in a section."""

    lease: int
    seq: int
    ranges: SortedPartitions
    holder: str

    @property
    def owner(self) -> Owner:
        """Who wrote the entry (its etcd lease id and acquisition number): unique in the cluster."""
        return Owner(self.lease, self.seq)


def encode(entries: Iterable[Entry]) -> bytes:
    return json.dumps(
        {
            "v": FORMAT_VERSION,
            "leases": [
                {
                    "lease": e.lease,
                    "seq": e.seq,
                    "ranges": e.ranges.to_strings(),
                    "holder": e.holder,
                }
                for e in entries
            ],
        },
        separators=(",", ":"),
    ).encode()


def decode(section_id: str, raw: bytes) -> list[Entry]:
    """The entries stored in ``raw``; :class:`CorruptSection` if it is not a value we wrote.

    Any ``raw`` at all either decodes or raises :class:`CorruptSection`, in time and memory
    bounded by :data:`MAX_VALUE_BYTES`: its size and depth (:data:`MAX_DEPTH`) are checked at C
    speed before ``json`` parses it, and each number's length (:data:`MAX_INT_DIGITS`) before
    ``int()`` converts it. An error message shows a bounded part of what was wrong.
    """

    def corrupt(why: str) -> CorruptSection:
        shown = raw[:80] + (b"..." if len(raw) > 80 else b"")
        return CorruptSection(
            f"section {section_id!r}: stored value cannot be decoded ({_clip(why)}); it is left "
            f"untouched (`lessor repair` resets it): {shown!r}"
        )

    why = _too_deep(raw)
    if why is not None:
        raise corrupt(why)
    try:
        doc = _parse(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # RecursionError: only if _too_deep erred
        raise corrupt(f"not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise corrupt("not a JSON object")
    version = doc.get("v")
    if type(version) is not int or version != FORMAT_VERSION:
        raise corrupt(f"format version {_REPR.repr(version)}, this lessor reads {FORMAT_VERSION}")
    leases = doc.get("leases")
    if not isinstance(leases, list):
        raise corrupt("'leases' is not a list")
    entries = []
    for item in leases:
        try:
            if not isinstance(item, dict):
                raise TypeError("an entry must be a JSON object")
            lease, seq = item["lease"], item["seq"]
            holder, ranges = item["holder"], item["ranges"]
            if type(lease) is not int or type(seq) is not int:
                raise TypeError("lease and seq must be integers")
            if not (0 <= lease < _INT64_END and 0 <= seq < _INT64_END):
                raise ValueError(f"lease {lease} or seq {seq} is not in [0, 2**63)")
            if not isinstance(holder, str) or not isinstance(ranges, list):
                raise TypeError("holder must be a string and ranges a list")
            holder.encode()  # a lone surrogate raises: no writer could put it in its marker
            parts = SortedPartitions(Partition.from_string(r) for r in ranges)
        except (KeyError, TypeError, ValueError) as e:
            raise corrupt(f"bad entry {_REPR.repr(item)}: {e}") from None
        entries.append(Entry(lease, seq, parts, holder))
    return entries


def _too_deep(raw: bytes) -> str | None:
    """Why ``json`` must not parse ``raw``, or None: it is too large, or nests too deep.

    Only ``bytes`` methods look at every byte, in C: escapes go (``\\\\`` pairs first, so the
    ``\\"`` left are escaped quotes), then all but quotes and brackets, then what lies between
    quotes. The brackets left (a few hundred in a value we wrote) are peeled one level a pass.
    """
    if len(raw) > MAX_VALUE_BYTES:
        return f"{len(raw)} bytes, more than the {MAX_VALUE_BYTES} a section value may have"
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = raw.translate(_BRACKETS, _NOT_BRACKETS).replace(b'""', b"")
    if b'"' in brackets:  # a string holds a bracket: keep what is outside the quotes
        brackets = b"".join(brackets.split(b'"')[::2])
    for _ in range(MAX_DEPTH):
        if not brackets:
            return None
        brackets = brackets.replace(b"[]", b"")
    if brackets:
        return f"nested deeper than {MAX_DEPTH} levels, or its brackets do not balance"
    return None


def _parse(text: str) -> Any:
    """``json.loads(text)``, each number at most :data:`MAX_INT_DIGITS` digits long."""
    if 0 < sys.get_int_max_str_digits() <= MAX_INT_DIGITS:
        return json.loads(text)  # Python's cap bounds each int() json makes (and costs nothing)
    return _BOUNDED_JSON.decode(text)


def _bounded_int(text: str) -> int:
    digits = len(text) - text.startswith("-")
    if digits > MAX_INT_DIGITS:
        raise ValueError(f"a number of {digits} digits, more than {MAX_INT_DIGITS}")
    return int(text)


_BOUNDED_JSON: Final = json.JSONDecoder(parse_int=_bounded_int)


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}... ({len(text)} characters)"
