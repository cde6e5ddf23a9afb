"""What an operator needs: every section's live leases, and the repair of a corrupt section.

:func:`inspect` reads, at one revision, every section value, marker and turn under a
lessor's prefix and asks etcd how long each lease has left. :func:`repair` deletes a section
value that cannot be decoded, and only such a value: an intact section is never touched, a
section that changes meanwhile is left alone (compare-and-delete), and while holders' markers
are still alive it refuses unless forced, because those holders may still be working on ranges
that the repaired (empty) section would grant again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

from lessor.errors import CorruptSection, LessorError, Unavailable
from lessor.etcd import section
from lessor.etcd.keys import SectionKeys
from lessor.etcd.lessor import EtcdLessor
from lessor.etcd.state import TOMBSTONE, Turn
from lessor.etcd.transport import RetryableRpc
from lessor.partition import SortedPartitions

__all__ = ["LeaseInfo", "SectionInfo", "TurnInfo", "inspect", "repair"]


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """One live lease of a section."""

    lease: int  # etcd lease id
    seq: int
    ranges: SortedPartitions
    holder: str
    token: int
    ttl: int  # seconds etcd says its lease has left (-1: gone)


@dataclass(frozen=True, slots=True)
class SectionInfo:
    """A section as stored: its live leases, or why its value cannot be read."""

    section_id: str
    mod_revision: int
    leases: list[LeaseInfo] = field(default_factory=list)
    dead_entries: int = 0  # entries whose markers are gone; the next writer drops them
    markers: int = 0  # live holder markers, whatever their entries
    corrupt: str | None = None  # why the value cannot be decoded
    raw: bytes = b""
    turn: TurnInfo | None = None  # who holds the section's turn (``turn.py``), if anyone


@dataclass(frozen=True, slots=True)
class TurnInfo:
    """Who holds a section's turn: the process whose swap the others let win next
    (``turn.py``). It ends with its etcd lease, or when that process wins or stops."""

    holder: str
    lease: int  # the etcd lease it lives on
    revision: int  # when it was claimed (its create revision)


def _call(lessor: EtcdLessor, service: str, method: str, request: Any, what: str) -> Any:
    transport = lessor.transport
    call = transport.kv if service == "kv" else transport.lease
    try:
        return call(method, request, lessor.rpc_timeout, what)
    except RetryableRpc as e:
        raise Unavailable(f"{what}: {e}") from None


def inspect(lessor: EtcdLessor, section_id: str | None = None) -> list[SectionInfo]:
    """Every section under the lessor's prefix (or just ``section_id``), sorted by id."""
    rpc, prefix = lessor.transport.rpc, lessor.prefix.encode()
    if section_id is None:
        values, markers, turns = prefix + b"s/", prefix + b"m/", prefix + b"t/"
    else:
        keys = SectionKeys.of(lessor.prefix, section_id)
        values, markers, turns = keys.value, keys.markers, keys.turn

    def ranged(start: bytes, exact: bool, keys_only: bool) -> Any:
        end = b"" if exact else start[:-1] + bytes([start[-1] + 1])
        return rpc.RequestOp(request_range=rpc.RangeRequest(key=start, range_end=end,
                                                            keys_only=keys_only))  # fmt: skip

    request = rpc.TxnRequest(success=[ranged(values, section_id is not None, False),
                                      ranged(markers, False, False),
                                      ranged(turns, section_id is not None, False)])  # fmt: skip
    response = _call(lessor, "kv", "Txn", request, "inspecting sections")
    marker_kvs = response.responses[1].response_range.kvs
    turn_of = {kv.key: TurnInfo(Turn.of(kv).holder, kv.lease, kv.create_revision)
               for kv in response.responses[2].response_range.kvs}  # fmt: skip
    ttls: dict[int, int] = {}
    infos = []
    for kv in response.responses[0].response_range.kvs:
        escaped = kv.key[len(prefix) + 2 :]
        sid = unquote_to_bytes(escaped).decode("utf-8", errors="replace")
        keys = SectionKeys.of(lessor.prefix, sid)
        tokens = {keys.owner(m.key): m.create_revision for m in marker_kvs
                  if m.value != TOMBSTONE}  # fmt: skip
        tokens.pop(None, None)
        try:
            entries = section.decode(sid, kv.value)
        except CorruptSection as why:
            infos.append(SectionInfo(sid, kv.mod_revision, markers=len(tokens),
                                     corrupt=str(why), raw=kv.value,
                                     turn=turn_of.get(keys.turn)))  # fmt: skip
            continue
        leases = []
        for entry in entries:
            token = tokens.get(entry.owner)
            if token is None:
                continue
            if entry.lease not in ttls:
                request = rpc.LeaseTimeToLiveRequest(ID=entry.lease)
                answer = _call(lessor, "lease", "LeaseTimeToLive", request, f"section {sid!r}")
                ttls[entry.lease] = answer.TTL
            leases.append(LeaseInfo(entry.lease, entry.seq, entry.ranges, entry.holder, token,
                                    ttls[entry.lease]))  # fmt: skip
        infos.append(SectionInfo(sid, kv.mod_revision, leases, len(entries) - len(leases),
                                 len(tokens), raw=kv.value,
                                 turn=turn_of.get(keys.turn)))  # fmt: skip
    return sorted(infos, key=lambda i: i.section_id)


def repair(lessor: EtcdLessor, section_id: str, *, force: bool = False) -> bytes:
    """Delete the value of ``section_id`` if it cannot be decoded; return what was discarded."""
    found = inspect(lessor, section_id)
    if not found:
        raise LessorError(f"section {section_id!r} does not exist under {lessor.prefix!r}")
    info = found[0]
    if info.corrupt is None:
        raise LessorError(f"section {section_id!r} is intact ({len(info.leases)} live leases): "
                          "there is nothing to repair")  # fmt: skip
    if info.markers and not force:
        raise LessorError(
            f"section {section_id!r} still has {info.markers} live holder markers: their holders "
            "may be working on ranges the repaired section would grant again. Wait until their "
            "etcd leases expire, or force the repair."
        )
    rpc, keys = lessor.transport.rpc, SectionKeys.of(lessor.prefix, section_id)
    unchanged = rpc.Compare(key=keys.value, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL,
                            mod_revision=info.mod_revision)  # fmt: skip
    delete = rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=keys.value))
    request = rpc.TxnRequest(compare=[unchanged], success=[delete])
    if not _call(lessor, "kv", "Txn", request, f"repairing section {section_id!r}").succeeded:
        raise LessorError(f"section {section_id!r} changed while being repaired; look again")
    return info.raw
