"""etcd's own counts, read from its Prometheus ``/metrics`` and diffed around a measurement.

Round trips and writes in the benchmarks are what etcd counted, not what the client code is
believed to send:

* ``rpcs``: unary gRPC calls handled, per method (``grpc_server_handled_total`` with
  ``grpc_type="unary"``);
* ``stream_messages``: messages clients sent on streaming calls, per method
  (``grpc_server_msg_received_total``: a Watch create or cancel, a lease keep-alive), each a
  request that etcd answers;
* ``writes``: raft proposals committed (``etcd_server_proposals_committed_total``);
* the lease counters (granted, revoked by a client or by expiry, expired).

A cluster's members each count the client calls they served, so calls add up over members;
every member commits (and applies) every proposal, so writes and lease counters are the
largest member's, not the sum.
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
}


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
        return Counts(
            rpcs=+rpcs,  # drops methods whose count did not move
            stream_messages=+streams,
            failed_rpcs=self.failed_rpcs + sign * other.failed_rpcs,
            writes=self.writes + sign * other.writes,
            leases_granted=self.leases_granted + sign * other.leases_granted,
            leases_revoked=self.leases_revoked + sign * other.leases_revoked,
            leases_expired=self.leases_expired + sign * other.leases_expired,
            leader=self.leader + sign * other.leader,
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
        name, labels, value = sample.group(1), sample.group(2) or "", int(float(sample.group(3)))
        if name == "grpc_server_handled_total":
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
    total.writes = max(d.writes for d in deltas)
    total.leases_granted = max(d.leases_granted for d in deltas)
    total.leases_revoked = max(d.leases_revoked for d in deltas)
    total.leases_expired = max(d.leases_expired for d in deltas)
    return total


def is_leader(endpoint: str) -> bool:
    """Whether the member serving ``endpoint`` says it is the raft leader."""
    return scrape(endpoint).leader == 1
