"""A section as seen at one revision, and the Txns that read and change it.

The Txns are built and their answers read here, with no I/O: each method is a generator that
yields its call (``calls.py``) and returns what the answer means, so that the threaded shell
and the asyncio one make the very same calls.

Every Txn returns, in one round trip, what the next step needs: a read returns the value, the
markers and the section's turn (``turn.py``) at one revision; a check or a compare-and-swap
that fails returns the same fresh state from its failure branch, so a retry needs no extra
read (etcd's ``Mutex`` shapes its Txn the same way); a compare-and-swap that succeeds returns
its revision, the fencing token.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lessor.etcd import section
from lessor.etcd.calls import Calls, Unary
from lessor.etcd.keys import Owner, SectionKeys

__all__ = ["TOMBSTONE", "SectionTxns", "Snapshot", "Turn"]

MAX_TURN_VALUE = 4096
"""The longest turn value read as one (the lessor writes its holder label and one number)."""

TOMBSTONE = b"\x00lessor: abandoned"
"""The value of a tombstone marker (``SectionTxns.abandon``). A marker of a live entry holds its
holder's label, which the lessor never lets be this."""


@dataclass(frozen=True, slots=True)
class Turn:
    """The section's turn key as read (``turn.py``): which process's swap the others let win
    next. It lives on an etcd lease of its claimer's, so it ends with a crashed process.

    Its value is JSON: the holder's label, and its swaps' round trip when it claimed (what
    the others' patience is reckoned from). A value that is not that JSON (none the lessor
    writes) reads as a holder named by its text, with no round trip known; one longer than
    :data:`MAX_TURN_VALUE` bytes (far more than the lessor writes) is not parsed at all and
    reads as a holder that says only how long it is: no value can make a read fail."""

    lease: int
    create_revision: int  # which claim this is: a key deleted and claimed again is another
    holder: str
    attempt: float = 0.0  # seconds; 0: not known

    @staticmethod
    def value(holder: str, attempt: float) -> bytes:
        """The value a claim by ``holder``, whose swaps take ``attempt`` seconds, writes."""
        return json.dumps({"holder": holder, "attempt": round(attempt, 6)}).encode()

    @classmethod
    def of(cls, kv: Any) -> Turn:
        """The turn an etcd ``KeyValue`` of the turn key holds."""
        if len(kv.value) > MAX_TURN_VALUE:
            holder = f"(not the lessor's: a value of {len(kv.value)} bytes)"
            return cls(kv.lease, kv.create_revision, holder, 0.0)
        text = kv.value.decode("utf-8", errors="replace")
        holder, attempt = text, 0.0
        with contextlib.suppress(ValueError, RecursionError):
            fields = json.loads(text)
            if isinstance(fields, dict) and isinstance(fields.get("holder"), str):
                holder = fields["holder"]
                given = fields.get("attempt")
                if isinstance(given, float) and math.isfinite(given) and given > 0:
                    attempt = given
        return cls(kv.lease, kv.create_revision, holder, attempt)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A section as seen at one etcd revision."""

    revision: int  # the revision it was read or written at
    mod_revision: int  # the section key's; 0 when the key does not exist
    entries: tuple[section.Entry, ...]
    markers: Mapping[Owner, int]  # live entry owner -> token (marker create revision)
    turn: Turn | None = None  # None: nobody holds the section's turn

    def live(self) -> list[section.Entry]:
        return [e for e in self.entries if e.owner in self.markers]


class SectionTxns:
    """The Txns on one section's keys, as calls (run them with :func:`lessor.etcd.calls.run`
    or :func:`~lessor.etcd.calls.arun`). ``rpc`` is the module of etcd's generated messages
    (a transport's ``rpc``)."""

    def __init__(self, rpc: Any, keys: SectionKeys) -> None:
        self._rpc = rpc
        self.keys = keys
        self._what = f"section {keys.section_id!r}"
        self._state = self._state_ops()  # the same three reads in every Txn: build them once

    def read(self, timeout: float) -> Calls[Snapshot]:
        response = yield self._txn([], self._state, [], timeout)
        return self._parse(response.header.revision, response.responses)

    def check(
        self, snapshot: Snapshot, relied: Sequence[section.Entry], timeout: float
    ) -> Calls[tuple[Snapshot, bool]]:
        """Whether ``snapshot`` still holds for the entries ``relied`` on (no write); either
        way, the state as it is now. It writes nothing, so it takes no win from the holder of
        the section's turn and does not compare it."""
        response = yield self._txn(
            self._compares(snapshot, relied), self._state, self._state, timeout
        )
        return self._parse(response.header.revision, response.responses), response.succeeded

    def swap(
        self,
        snapshot: Snapshot,
        live: Sequence[section.Entry],
        relied: Sequence[section.Entry],
        ours: Sequence[section.Entry],
        timeout: float,
        *,
        drop: Sequence[Owner] = (),
        turn: int = 0,
        claim: float | None = None,
        released: Sequence[Owner] = (),
    ) -> Calls[tuple[Snapshot, bool]]:
        """Write the entries ``ours`` beside the ``live`` entries of ``snapshot``, with a marker
        for each, if what ``relied`` on holds, deleting the markers of the entries in ``drop``
        (left out of ``live``). Delete the markers of ``released`` (this process's releases,
        left out of ``live`` too) in either branch.

        ``turn`` is the create revision the section's turn key must have (0: it must not
        exist); a swap that expects one deletes it when it commits. With ``claim`` (this
        process's swaps' round trip, seconds), its failure branch claims the turn, if nobody
        holds it, on the etcd lease of ``ours[0]``.

        Returns the state written (its revision is the token of every entry in ``ours``) or
        the fresh state.
        """
        rpc = self._rpc
        entries = (*live, *ours)
        markers = [self.keys.marker(e.lease, e.seq) for e in ours]
        # Releases riding this swap (gate.py) are deleted whether it wins or loses: a lost swap
        # is a raft write all the same, so they cost etcd no write of their own. The deletions
        # come before the reads in both branches, so the state returned is the state after them.
        releases = [self._delete(o) for o in released]
        success = [
            rpc.RequestOp(
                request_put=rpc.PutRequest(key=self.keys.value, value=section.encode(entries))
            ),
            *(
                rpc.RequestOp(
                    request_put=rpc.PutRequest(key=marker, value=e.holder.encode(), lease=e.lease)
                )
                for marker, e in zip(markers, ours, strict=True)
            ),
            *(self._delete(o) for o in drop),
            *releases,
            # A swap that commits under a turn ends it: the next loser may claim it.
            *([self._delete_key(self.keys.turn)] if turn else []),
            self._state[1],  # every marker, after the writes: the state written is all fresh
        ]
        # Our markers must not exist yet: an abandoned acquisition leaves a tombstone there
        # (see abandon), so a swap that reaches etcd after its sender gave up cannot commit.
        fresh = [
            rpc.Compare(key=marker, target=rpc.Compare.VERSION, result=rpc.Compare.EQUAL, version=0)
            for marker in markers
        ]
        # The turn only adds a compare: a swap commits under it only where it would without.
        # While a process holds the turn, everyone else's swap fails (they expect none, or
        # the claim they last saw), so its own next swap, built on the state its failure
        # branch brought back, is the one left to win.
        compares = [*self._compares(snapshot, relied), *fresh, self._turn_compare(turn)]
        failure = [*releases, *self._state]
        if claim is not None and ours:
            # The claim rides on a swap that lost, which etcd writes through raft anyway: no
            # round trip or write of its own. It goes before the reads, so that the state
            # returned shows the turn as it left it. Whose claim that is, the turn's lease
            # says (``turn.py``), not the reply's revision: a claim that found the turn taken
            # writes nothing, and the reply then carries the revision of the newest write,
            # which may be the other process's claim.
            failure = [*releases, self._claim(ours[0], claim), *self._state]
        response = yield self._txn(compares, success, failure, timeout)
        revision = response.header.revision
        if not response.succeeded:
            state = response.responses[len(failure) - len(self._state) :]
            return self._parse(revision, state), False
        # No turn after a swap that committed: it expected none, or deleted the one it expected.
        return Snapshot(revision, revision, entries, self._markers(response.responses[-1])), True

    def abandon(self, lease: int, seq: int, timeout: float) -> Calls[None]:
        """Make sure acquisition ``seq`` holds nothing, whether or not its swap committed.

        A swap whose reply was lost may still be queued inside etcd (a paused member applies
        it when it wakes). If the swap already committed, its marker is deleted, which kills
        its entry. If not, a tombstone takes the marker's key (on the same etcd lease, so it
        expires with it), and the late swap's "marker absent" compare fails.

        The test is "a marker that is not our tombstone", not "a marker": this call is
        retried when its reply is lost, and a retry that took our own tombstone for a
        committed swap would delete it, and let the late swap commit an entry nobody holds.
        (A ``VALUE`` compare on a key that does not exist is false in etcd.) A retry after a
        first try that deleted a committed marker writes a tombstone in its place: readers
        never count a tombstone as a marker, so that entry stays dead.
        """
        rpc, marker = self._rpc, self.keys.marker(lease, seq)
        committed = rpc.Compare(key=marker, target=rpc.Compare.VALUE,
                                result=rpc.Compare.NOT_EQUAL, value=TOMBSTONE)  # fmt: skip
        delete = self._delete_key(marker)
        tombstone = rpc.RequestOp(
            request_put=rpc.PutRequest(key=marker, value=TOMBSTONE, lease=lease)
        )
        yield self._txn([committed], [delete], [tombstone], timeout)

    def drop_turn(self, create_revision: int, lease: int, timeout: float) -> Calls[None]:
        """End this process's claim of the turn when it stops contending without a win: the
        claim made at ``create_revision``, or (0) one that lies on our etcd lease ``lease``
        (made by a swap whose reply never came); never another process's claim, which lies
        on a lease of its own."""
        rpc, key = self._rpc, self.keys.turn
        if create_revision:
            ours = self._turn_compare(create_revision)
        else:  # a missing key's lease is 0: no lease of ours
            ours = rpc.Compare(key=key, target=rpc.Compare.LEASE, result=rpc.Compare.EQUAL,
                               lease=lease)  # fmt: skip
        delete = self._delete_key(self.keys.turn)
        yield self._txn([ours], [delete], [], timeout)

    def delete_marker(self, lease: int, seq: int, timeout: float) -> Calls[None]:
        request = self._rpc.DeleteRangeRequest(key=self.keys.marker(lease, seq))
        yield Unary("kv", "DeleteRange", request, timeout, f"{self._what}: releasing")

    def delete_markers(self, owners: Sequence[Owner], timeout: float) -> Calls[None]:
        """Delete the markers of ``owners``: releases that ride one Txn (``gate.py``), one raft
        write for all (a lone one is a plain delete, cheaper for etcd than a Txn). No compare:
        a marker already gone (expired, or deleted by a Txn whose reply was lost) is simply
        not there to delete."""
        if len(owners) == 1:
            yield from self.delete_marker(*owners[0], timeout)
            return
        yield self._txn([], [self._delete(o) for o in owners], [], timeout)

    # -- building and parsing ----------------------------------------------------------------

    def _txn(
        self, compare: list[Any], success: list[Any], failure: list[Any], timeout: float
    ) -> Unary:
        request = self._rpc.TxnRequest(compare=compare, success=success, failure=failure)
        return Unary("kv", "Txn", request, timeout, self._what)

    def _delete(self, owner: Owner) -> Any:
        return self._delete_key(self.keys.marker(*owner))

    def _delete_key(self, key: bytes) -> Any:
        rpc = self._rpc
        return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))

    def _state_ops(self) -> list[Any]:
        rpc, keys = self._rpc, self.keys
        return [
            rpc.RequestOp(request_range=rpc.RangeRequest(key=keys.value)),
            # With values (holder labels, short): a tombstone is not a marker (see abandon).
            rpc.RequestOp(
                request_range=rpc.RangeRequest(key=keys.markers, range_end=keys.markers_end)
            ),
            rpc.RequestOp(request_range=rpc.RangeRequest(key=keys.turn)),
        ]

    def _turn_compare(self, turn: int) -> Any:
        rpc, key = self._rpc, self.keys.turn
        if turn:
            return rpc.Compare(key=key, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL,
                               create_revision=turn)  # fmt: skip
        return rpc.Compare(key=key, target=rpc.Compare.VERSION, result=rpc.Compare.EQUAL,
                           version=0)  # fmt: skip

    def _claim(self, writer: section.Entry, attempt: float) -> Any:
        # A Txn inside the failure branch (etcd >= 3.3): take the turn only if nobody has it.
        rpc, key = self._rpc, self.keys.turn
        value = Turn.value(writer.holder, attempt)
        put = rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=writer.lease))
        free = self._turn_compare(0)
        return rpc.RequestOp(request_txn=rpc.TxnRequest(compare=[free], success=[put]))

    def _compares(self, snapshot: Snapshot, relied: Sequence[section.Entry]) -> list[Any]:
        # The section key unchanged, and every marker relied on still the one seen (its create
        # revision: a marker deleted and written again, as a tombstone, is not the same one):
        # a cached state that went stale fails here instead of withholding a free range.
        rpc = self._rpc
        compares = [
            rpc.Compare(
                key=self.keys.value,
                target=rpc.Compare.MOD,
                result=rpc.Compare.EQUAL,
                mod_revision=snapshot.mod_revision,
            )
        ]
        compares += [
            rpc.Compare(
                key=self.keys.marker(e.lease, e.seq),
                target=rpc.Compare.CREATE,
                result=rpc.Compare.EQUAL,
                create_revision=snapshot.markers[e.owner],
            )
            for e in relied
        ]
        return compares

    def _parse(self, revision: int, responses: Sequence[Any]) -> Snapshot:
        kvs = responses[0].response_range.kvs
        if kvs:
            entries = tuple(section.decode(self.keys.section_id, kvs[0].value))
            mod_revision = kvs[0].mod_revision
        else:
            entries, mod_revision = (), 0
        turn = None
        for kv in responses[2].response_range.kvs:
            turn = Turn.of(kv)
        return Snapshot(revision, mod_revision, entries, self._markers(responses[1]), turn)

    def _markers(self, response: Any) -> dict[Owner, int]:
        markers: dict[Owner, int] = {}
        for kv in response.response_range.kvs:
            owner = self.keys.owner(kv.key)
            if owner is not None and kv.value != TOMBSTONE:
                markers[owner] = kv.create_revision
        return markers
