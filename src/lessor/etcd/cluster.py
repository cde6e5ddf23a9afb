"""Deprecated: moved to :mod:`lessor.testing.cluster` (``lessor.testing.LocalEtcdCluster``);
this alias stays for one release and warns when imported."""

from __future__ import annotations

import warnings

from lessor.testing.cluster import LocalEtcdCluster, Member
from lessor.testing.leader import MemberStatus

__all__ = ["LocalEtcdCluster", "Member", "MemberStatus"]

warnings.warn(
    "lessor.etcd.cluster is deprecated: use lessor.testing.cluster "
    "(lessor.testing.LocalEtcdCluster)",
    DeprecationWarning,
    stacklevel=2,
)
