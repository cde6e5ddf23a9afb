"""What etcd holds for a section, read straight from it: not through the lessor under test.

:class:`Stored` reads a section's value and its markers in one Txn (the sync
:class:`~lessor.etcd.state.SectionTxns` through threaded :class:`~lessor.etcd.channels.Channels`
of its own), and gives the live entries: those whose marker exists and is not a tombstone,
exactly as every lessor counts them. A test of the asyncio lessor reads etcd this way, so that
no asyncio code stands between what it checks and what etcd has.
"""

from __future__ import annotations

from collections.abc import Sequence

from lessor import Partition
from lessor.etcd.calls import run
from lessor.etcd.channels import Channels
from lessor.etcd.keys import SectionKeys
from lessor.etcd.state import SectionTxns

__all__ = ["Stored"]


class Stored:
    """A reader of sections under ``prefix`` at ``endpoints``; :meth:`close` it."""

    def __init__(self, endpoints: Sequence[str], prefix: str) -> None:
        self._channels = Channels(endpoints)
        self._prefix = prefix

    def live(self, section_id: str) -> dict[str, list[Partition]]:
        """The ranges of the section's live entries, by holder label (sorted by range)."""
        txns = SectionTxns(self._channels.rpc, SectionKeys.of(self._prefix, section_id))
        snapshot = run(self._channels, txns.read(5.0))
        held: dict[str, list[Partition]] = {}
        for entry in snapshot.live():
            held.setdefault(entry.holder, []).extend(entry.ranges)
        return {holder: sorted(ranges, key=lambda p: p.low) for holder, ranges in held.items()}

    def close(self) -> None:
        """Close its channels (``with contextlib.closing(Stored(...)) as stored:``)."""
        self._channels.close()
