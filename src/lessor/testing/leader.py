"""Who leads an etcd cluster, from what its members say: the one leader lookup of the tests.

:func:`member_status` asks one member etcd's maintenance ``Status``; :func:`leader_of` tells the
leader from such answers. :meth:`LocalEtcdCluster.wait_for_leader
<lessor.testing.LocalEtcdCluster.wait_for_leader>` uses both, and so does the datacenters
harness of the tests, whose members answer from inside network namespaces.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

import grpc

__all__ = ["MemberStatus", "leader_of", "member_status"]

_K = TypeVar("_K")


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """One member's answer to etcd's maintenance ``Status`` RPC."""

    member_id: int
    leader_id: int  # 0 when the member knows of no leader
    raft_term: int
    raft_index: int
    revision: int


def member_status(channel: grpc.Channel, timeout: float = 0.5) -> MemberStatus | None:
    """The ``Status`` answer of the member behind ``channel``, or None if it gives none within
    ``timeout``."""
    import pyetcd.etcdrpc as rpc  # noqa: PLC0415  (the stubs lessor.etcd already uses)

    try:
        response = rpc.MaintenanceStub(channel).Status(rpc.StatusRequest(), timeout=timeout)
    except grpc.RpcError:
        return None
    return MemberStatus(
        member_id=response.header.member_id,
        leader_id=response.leader,
        raft_term=response.raftTerm,
        raft_index=response.raftIndex,
        revision=response.header.revision,
    )


def leader_of(statuses: Mapping[_K, MemberStatus]) -> _K | None:
    """Which of the members that answered ``statuses`` leads, or None.

    A member counts as leader when it claims the leadership itself in the latest term any of
    them reports: a member cut off since may still believe it leads an older term.
    """
    if not statuses:
        return None
    term = max(s.raft_term for s in statuses.values())
    for key, s in statuses.items():
        if s.raft_term == term and s.leader_id != 0 and s.leader_id == s.member_id:
            return key
    return None
