"""etcd's own counts, read from its Prometheus ``/metrics`` and diffed around a measurement.

Round trips and writes in the benchmarks are what etcd counted, not what the client code is
believed to send:

* ``rpcs``: unary gRPC calls handled, per method (``grpc_server_handled_total`` with
  ``grpc_type="unary"``);
* ``stream_messages``: messages clients sent on streaming calls, per method
  (``grpc_server_msg_received_total``: a Watch create or cancel, a lease keep-alive), each a
  request that etcd answers;
* ``writes``: raft proposals committed (``etcd_server_proposals_committed_total``);
* the lease counters (granted, revoked by a client or by expiry, expired);
* ``durations``: the sums and counts of etcd's own latency histograms behind a write (what an
  etcd member spends committing it): the WAL's fsync (``etcd_disk_wal_fsync_duration_seconds``,
  one per raft batch, on every member: the wall of a write on one disk), the backend's commit
  (``etcd_disk_backend_commit_duration_seconds``, batched in the background), a Txn's apply
  (``etcd_server_apply_duration_seconds``, every label summed) and the round trip to each peer
  (``etcd_network_peer_round_trip_time_seconds``); ``proposals_failed``; and the member's
  CPU time (``process_cpu_seconds_total``, in ``durations["cpu_seconds"]``).

A cluster's members each count the client calls they served, so calls add up over members;
every member commits (and applies) every proposal, so writes and lease counters are the
largest member's, not the sum. Durations add up over members (each member fsyncs its own WAL):
their mean is over every member's.
"""

from __future__ import annotations

import re
import urllib.request
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["Counts", "cluster_delta", "is_leader", "scrape", "scrape_all"]

_SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')

_SCALARS = {
    "etcd_server_proposals_committed_total": "writes",
    "etcd_debugging_lease_granted_total": "leases_granted",
    "etcd_debugging_lease_revoked_total": "leases_revoked",
    "etcd_debugging_server_lease_expired_total": "leases_expired",
    "etcd_server_is_leader": "leader",
    "etcd_server_proposals_failed_total": "proposals_failed",
}

DURATIONS = {
    "etcd_disk_wal_fsync_duration_seconds": "wal_fsync",
    "etcd_disk_backend_commit_duration_seconds": "backend_commit",
    "etcd_server_apply_duration_seconds": "apply",
    "etcd_network_peer_round_trip_time_seconds": "peer_round_trip",
}
"""etcd's latency histograms read (their ``_sum`` and ``_count``), by the short name they get
in :attr:`Counts.durations`: ``<short>_seconds`` and ``<short>_count``."""


@dataclass
class Counts:
    """Counters read from etcd's /metrics, or the difference of two readings."""

    rpcs: Counter[str] = field(default_factory=Counter)  # unary gRPC method -> calls handled
    stream_messages: Counter[str] = field(default_factory=Counter)  # streaming method -> msgs
    failed_rpcs: int = 0  # unary calls handled with a code other than OK
    writes: int = 0  # raft proposals committed
    leases_granted: int = 0
    leases_revoked: int = 0  # by a client, or by etcd when a lease expired
    leases_expired: int = 0
    leader: int = 0  # 1 when the member read was the leader (a gauge: not diffed meaningfully)
    proposals_failed: int = 0
    # "<short>_seconds" / "<short>_count" of each histogram in DURATIONS, summed over labels
    durations: Counter[str] = field(default_factory=Counter)

    def mean_ms(self, short: str) -> float | None:
        """The mean of one of :data:`DURATIONS` (by its short name) in ms; None when none."""
        n = self.durations[f"{short}_count"]
        return self.durations[f"{short}_seconds"] / n * 1e3 if n > 0 else None

    @property
    def round_trips(self) -> int:
        """Requests etcd answered: unary calls plus messages sent on streams."""
        return self.rpcs.total() + self.stream_messages.total()

    def __add__(self, other: Counts) -> Counts:
        return self._combine(other, 1)

    def __sub__(self, other: Counts) -> Counts:
        return self._combine(other, -1)

    def _combine(self, other: Counts, sign: int) -> Counts:
        rpcs, streams = Counter(self.rpcs), Counter(self.stream_messages)
        for method, n in other.rpcs.items():
            rpcs[method] += sign * n
        for method, n in other.stream_messages.items():
            streams[method] += sign * n
        durations = Counter(self.durations)
        for name, x in other.durations.items():
            durations[name] += sign * x
        return Counts(
            rpcs=+rpcs,  # drops methods whose count did not move
            stream_messages=+streams,
            failed_rpcs=self.failed_rpcs + sign * other.failed_rpcs,
            writes=self.writes + sign * other.writes,
            leases_granted=self.leases_granted + sign * other.leases_granted,
            leases_revoked=self.leases_revoked + sign * other.leases_revoked,
            leases_expired=self.leases_expired + sign * other.leases_expired,
            leader=self.leader + sign * other.leader,
            proposals_failed=self.proposals_failed + sign * other.proposals_failed,
            durations=durations,
        )


def scrape(endpoint: str) -> Counts:
    """One member's counters now, from ``http://<endpoint>/metrics``."""
    with urllib.request.urlopen(f"http://{endpoint}/metrics", timeout=5) as response:
        text = response.read().decode()
    counts = Counts()
    for line in text.splitlines():
        sample = _SAMPLE.match(line)
        if sample is None:
            continue  # a comment
        name, labels, raw = sample.group(1), sample.group(2) or "", float(sample.group(3))
        value = int(raw)
        base, _, suffix = name.rpartition("_")
        if base in DURATIONS and suffix in ("sum", "count"):
            unit = "seconds" if suffix == "sum" else "count"
            counts.durations[f"{DURATIONS[base]}_{unit}"] += raw
        elif name == "process_cpu_seconds_total":
            counts.durations["cpu_seconds"] += raw
        elif name == "grpc_server_handled_total":
            label = dict(_LABEL.findall(labels))
            if label.get("grpc_type") == "unary":
                counts.rpcs[label["grpc_method"]] += value
                if label.get("grpc_code") != "OK":
                    counts.failed_rpcs += value
        elif name == "grpc_server_msg_received_total":
            label = dict(_LABEL.findall(labels))
            if label.get("grpc_type") != "unary":
                counts.stream_messages[label["grpc_method"]] += value
        elif name in _SCALARS:
            setattr(counts, _SCALARS[name], value)
    return counts


def scrape_all(endpoints: Iterable[str]) -> list[Counts]:
    """Every member's counters now, in the order of ``endpoints``."""
    return [scrape(e) for e in endpoints]


def cluster_delta(before: list[Counts], after: list[Counts]) -> Counts:
    """What a cluster counted between two :func:`scrape_all` readings: calls summed over
    members, writes and lease counts those of the member that counted the most."""
    deltas = [a - b for a, b in zip(after, before, strict=True)]
    total = Counts()
    for d in deltas:
        total.rpcs.update(d.rpcs)
        total.stream_messages.update(d.stream_messages)
        total.failed_rpcs += d.failed_rpcs
        total.durations.update(d.durations)
    total.writes = max(d.writes for d in deltas)
    total.leases_granted = max(d.leases_granted for d in deltas)
    total.leases_revoked = max(d.leases_revoked for d in deltas)
    total.leases_expired = max(d.leases_expired for d in deltas)
    total.proposals_failed = max(d.proposals_failed for d in deltas)
    return total


def is_leader(endpoint: str) -> bool:
    """Whether the member serving ``endpoint`` says it is the raft leader."""
    return scrape(endpoint).leader == 1
