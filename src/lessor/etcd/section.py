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
from collections.abc import Iterable
from dataclasses import dataclass

from lessor.errors import CorruptSection
from lessor.partition import Partition, SortedPartitions

__all__ = ["FORMAT_VERSION", "Entry", "decode", "encode"]

FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Entry:
    """One acquisition recorded in a section."""

    lease: int
    seq: int
    ranges: SortedPartitions
    holder: str

    @property
    def owner(self) -> tuple[int, int]:
        """Who wrote the entry: (etcd lease id, acquisition number), unique in the cluster."""
        return (self.lease, self.seq)


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
    """The entries stored in ``raw``; :class:`CorruptSection` if it is not a value we wrote."""

    def corrupt(why: str) -> CorruptSection:
        shown = raw[:80] + (b"..." if len(raw) > 80 else b"")
        return CorruptSection(
            f"section {section_id!r}: stored value cannot be decoded ({why}); it is left "
            f"untouched (`lessor repair` resets it): {shown!r}"
        )

    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise corrupt(f"not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise corrupt("not a JSON object")
    version = doc.get("v")
    if version != FORMAT_VERSION:
        raise corrupt(f"format version {version!r}, this lessor reads {FORMAT_VERSION}")
    leases = doc.get("leases")
    if not isinstance(leases, list):
        raise corrupt("'leases' is not a list")
    entries = []
    for item in leases:
        try:
            lease, seq = item["lease"], item["seq"]
            holder, ranges = item["holder"], item["ranges"]
            if not all(isinstance(x, int) and not isinstance(x, bool) for x in (lease, seq)):
                raise TypeError("lease and seq must be integers")
            if not isinstance(holder, str) or not isinstance(ranges, list):
                raise TypeError("holder must be a string and ranges a list")
            parts = SortedPartitions(Partition.from_string(r) for r in ranges)
        except (KeyError, TypeError, ValueError) as e:
            raise corrupt(f"bad entry {item!r}: {e}") from None
        entries.append(Entry(lease, seq, parts, holder))
    return entries
