"""Where a section lives in etcd: key names under the lessor's prefix.

    <prefix>s/<escaped section id>                        the section value (section.py)
    <prefix>m/<escaped section id>/<lease hex>.<seq hex>  one holder marker per acquisition
    <prefix>t/<escaped section id>                        the section's turn (``turn.py``)

A section id is percent-encoded (UTF-8, every byte outside ``[A-Za-z0-9_.~-]`` escaped), so an
escaped id never contains ``/``: no id, whatever it holds, can name another section's key or
reach into another section's markers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import quote

__all__ = ["MAX_SECTION_ID_BYTES", "Owner", "SectionKeys", "validate_prefix"]

MAX_SECTION_ID_BYTES = 4096
"""The longest section id accepted, in UTF-8 bytes (its key may be up to three times longer)."""


class Owner(NamedTuple):
    """Who wrote a section entry and its marker: one acquisition, unique in the cluster."""

    lease: int  # the etcd lease its marker is attached to
    seq: int  # the acquisition's number in its lessor


def validate_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"etcd key prefix must be a non-empty str, got {prefix!r}")
    if not prefix.endswith("/"):
        raise ValueError(f"etcd key prefix must end with '/', got {prefix!r}")
    return prefix


@dataclass(frozen=True, slots=True)
class SectionKeys:
    """The etcd keys of one section."""

    section_id: str
    value: bytes
    markers: bytes  # the prefix every marker key of the section starts with
    turn: bytes  # the process whose swap the others let win next, if any (``turn.py``)

    @classmethod
    def of(cls, prefix: str, section_id: str) -> SectionKeys:
        try:
            raw = section_id.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"section id {section_id!r} is not valid unicode: {e}") from None
        if len(raw) > MAX_SECTION_ID_BYTES:
            raise ValueError(
                f"section id is {len(raw)} bytes in UTF-8; the etcd lessor accepts at most "
                f"{MAX_SECTION_ID_BYTES}: {section_id[:40]!r}..."
            )
        escaped = quote(raw, safe="")
        return cls(
            section_id,
            f"{prefix}s/{escaped}".encode(),
            f"{prefix}m/{escaped}/".encode(),
            f"{prefix}t/{escaped}".encode(),
        )

    def marker(self, lease_id: int, seq: int) -> bytes:
        return self.markers + f"{lease_id:x}.{seq:x}".encode()

    def owner(self, marker: bytes) -> Owner | None:
        """The (lease, seq) a marker key of this section names; None for any other key."""
        if not marker.startswith(self.markers):
            return None
        lease, dot, seq = marker[len(self.markers) :].partition(b".")
        try:
            return Owner(int(lease, 16), int(seq, 16)) if dot else None
        except ValueError:
            return None

    @property
    def markers_end(self) -> bytes:
        """The range end covering exactly the keys that start with :attr:`markers`."""
        return self.markers[:-1] + bytes([self.markers[-1] + 1])
