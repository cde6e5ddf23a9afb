"""The etcd the benchmarks run against: one member, or three with latency between them.

Docker first: each member is an :class:`~lessor.testing.EtcdContainer` (testcontainers,
host networking on loopback). Where no Docker daemon answers, each member is a
:class:`~lessor.testing.LocalEtcd` process instead, and :attr:`Target.how` says so (the
runner prints it and writes it into every output).

Three members with latency: a userspace :class:`~lessor.testing.FaultProxy` with a one-way
``delay`` sits in front of every member's client port (clients dial the proxies) *and* of every
member's peer port (each member advertises its proxy as its peer URL, so every raft message
between two members crosses one proxy each way). A request to a follower therefore pays the
delay twice to reach it and twice more for each raft round trip behind it. The members are
started with their single-member flags plus overrides (``--name``, the advertised peer URL,
``--initial-cluster``, a cluster token): etcd takes the last value given for a flag.
"""

from __future__ import annotations

import contextlib
import random
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from etcd_metrics import is_leader
from lessor.testing import FaultProxy, LocalEtcd, find_etcd_binary, free_ports

__all__ = ["Target", "docker_problem", "one_member", "three_members"]


def _loopback_host() -> str:
    """A random loopback address: other etcds on this machine (tests running beside the
    benchmark) pick free ports on 127.0.0.1, and one of them could take a port between our
    choosing it and etcd binding it, then answer our health check."""
    rng = random.Random()
    return f"127.{rng.randint(64, 254)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


class _Member(Protocol):
    """What a member needs of LocalEtcd and EtcdContainer alike."""

    client_port: int
    peer_port: int

    @property
    def endpoint(self) -> str: ...

    def start(self) -> object: ...

    def close(self) -> None: ...


@dataclass
class Target:
    """A running etcd: where clients dial, where its counters are read, and how it runs."""

    client_endpoints: list[str]  # what clients dial (the proxies, when there is latency)
    member_endpoints: list[str]  # the members' own client ports: /metrics, leadership
    how: str  # "Docker (testcontainers)" or "local processes (...)"
    etcd_version: str
    delay_ms: float  # one-way delay per proxy hop; 0 without proxies

    def leader(self) -> int | None:
        """The index of the member that says it leads, if one does."""
        for i, endpoint in enumerate(self.member_endpoints):
            if is_leader(endpoint):
                return i
        return None


def docker_problem() -> str | None:
    """Why the benchmarks cannot run etcd in Docker here, or None when they can."""
    try:
        from lessor.testing import docker_unavailable  # noqa: PLC0415  (testcontainers)
    except ImportError as e:
        return f"testcontainers is not installed ({e})"
    return docker_unavailable()


def _version_of(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    first = out.stdout.splitlines()[0]  # "etcd Version: 3.5.16"
    return first.split(":", 1)[1].strip()


def _factory(
    docker: bool, fsync: bool, host: str
) -> tuple[Callable[[list[str]], _Member], str, str]:
    """How to make a member from its override flags, the etcd version, and the word for it."""
    if docker:
        from lessor.testing import EtcdContainer  # noqa: PLC0415  (testcontainers)
        from lessor.testing.image import find_image_etcd_binary  # noqa: PLC0415

        version = _version_of(find_image_etcd_binary())  # the image's etcd runs here as well
        return (
            lambda extra: EtcdContainer(host=host, fsync=fsync, extra_args=extra),
            version,
            "Docker (testcontainers, host network)",
        )
    binary = find_etcd_binary()
    return (
        lambda extra: LocalEtcd(host=host, binary=binary, fsync=fsync, extra_args=extra),
        _version_of(binary),
        "local processes (no Docker daemon)",
    )


def _start_all(members: list[_Member]) -> None:
    """Start members at once: each waits for a healthy cluster, which needs a quorum up."""
    errors: list[BaseException] = []

    def start(m: _Member) -> None:
        try:
            m.start()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=start, args=(m,)) for m in members]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


@contextlib.contextmanager
def one_member(*, docker: bool, fsync: bool) -> Iterator[Target]:
    make, version, how = _factory(docker, fsync, _loopback_host())
    member = make([])
    with contextlib.ExitStack() as stack:
        stack.callback(member.close)
        member.start()
        yield Target([member.endpoint], [member.endpoint], how, version, 0.0)


@contextlib.contextmanager
def three_members(*, docker: bool, fsync: bool, delay_ms: float) -> Iterator[Target]:
    host = _loopback_host()
    make, version, how = _factory(docker, fsync, host)
    delay = delay_ms / 1e3
    token = f"lessor-bench-{uuid.uuid4().hex[:8]}"
    with contextlib.ExitStack() as stack:
        flat = free_ports(6, host)
        ports = [(flat[i], flat[i + 1]) for i in range(0, 6, 2)]
        peer_proxies = [
            stack.enter_context(FaultProxy(f"{host}:{peer}", listen=f"{host}:0", delay=delay))
            for _, peer in ports
        ]
        client_proxies = [
            stack.enter_context(FaultProxy(f"{host}:{client}", listen=f"{host}:0", delay=delay))
            for client, _ in ports
        ]
        cluster = ",".join(f"m{i}=http://{p.address}" for i, p in enumerate(peer_proxies))
        members: list[_Member] = []
        for i, (client, peer) in enumerate(ports):
            member = make(
                [
                    "--name", f"m{i}",
                    "--initial-advertise-peer-urls", f"http://{peer_proxies[i].address}",
                    "--initial-cluster", cluster,
                    "--initial-cluster-token", token,
                ]
            )  # fmt: skip
            member.client_port, member.peer_port = client, peer
            stack.callback(member.close)
            members.append(member)
        _start_all(members)
        yield Target(
            [p.address for p in client_proxies],
            [m.endpoint for m in members],
            how,
            version,
            delay_ms,
        )
