"""A throw-away etcd cluster on loopback, with fault injection, for failover tests.

``LocalEtcdCluster(size=3)`` starts ``size`` etcd members, each an
:class:`~lessor.testing.process.EtcdProcess` in its own directory, listening on its own loopback
address ``127.a.b.(c+i)`` with free ports, and tuned like :class:`~lessor.testing.LocalEtcd`
(:func:`~lessor.testing.process.tuning_flags`). It is a context manager; closing it kills every
member, removes its firewall rules and deletes its data.

Faults, by member index:

* :meth:`~LocalEtcdCluster.kill` (SIGKILL, a crash), :meth:`~LocalEtcdCluster.stop` (SIGTERM),
  :meth:`~LocalEtcdCluster.restart` (same data dir and flags; etcd ignores the
  ``--initial-cluster*`` flags once it has a WAL, and rejoins as the member it was);
* :meth:`~LocalEtcdCluster.pause` / :meth:`~LocalEtcdCluster.resume` (SIGSTOP / SIGCONT: the
  kernel still accepts connections and buffers requests, but nothing answers);
* :meth:`~LocalEtcdCluster.isolate` / :meth:`~LocalEtcdCluster.heal`: a network partition of
  one member from its peers *and* its clients, in both directions, with iptables (how, and why
  not proxies: :mod:`lessor.testing.isolation`).

:meth:`~LocalEtcdCluster.isolate` needs root and ``iptables`` when the cluster starts
(``isolation=None``, the default, turns it on when both are there; ``True`` insists), and says
so when it has neither: the members then run under uids of their own. Everything else works
unprivileged: the members then run as the caller.

Leadership: :meth:`~LocalEtcdCluster.wait_for_leader` asks the reachable members and applies
:func:`~lessor.testing.leader.leader_of`, the one rule that tells the leader from their answers.

Addresses: each cluster picks a random ``127.a.b.c`` block (``a`` >= 64, away from the usual
``127.0.0.x``) and binds an abstract unix socket named after each address while it lives, so
concurrent test runs never share an address, a uid or a mark.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

import grpc

from lessor.testing.binary import find_etcd_binary
from lessor.testing.isolation import (
    Firewall,
    identity,
    iptables_binary,
    purge_stale_rules,
    rule_tag,
)
from lessor.testing.isolation import available as isolation_available
from lessor.testing.leader import MemberStatus, leader_of, member_status
from lessor.testing.process import EtcdProcess, free_ports, tuning_flags

__all__ = ["LocalEtcdCluster", "Member"]


class Member(EtcdProcess):
    """One etcd process of a :class:`LocalEtcdCluster`; the cluster drives it."""

    def __init__(self, index: int, host: str, workdir: Path, *, isolatable: bool) -> None:
        uid, mark = identity(host)
        super().__init__(f"m{index}", workdir / f"m{index}", uid=uid if isolatable else None)
        self.index = index
        self.host = host
        self.client_port, self.peer_port = free_ports(2, host)
        self.mark = mark
        self.member_id: int | None = None  # etcd's id, learned from the first Status answer
        self.isolated = False

    def __repr__(self) -> str:
        state = "running" if self.running else "down"
        if self.paused:
            state += ", paused"
        if self.isolated:
            state += ", isolated"
        return f"<Member {self.name} {self.endpoint} pid={self.pid} {state}>"

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"http://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def reachable(self) -> bool:
        """Running, not paused and not isolated: it should answer."""
        return self.running and not self.paused and not self.isolated


class LocalEtcdCluster:
    """``size`` etcd members on loopback, with faults; a context manager. See the module doc."""

    def __init__(
        self,
        size: int = 3,
        *,
        binary: str | None = None,
        heartbeat_ms: int = 50,
        election_ms: int = 500,
        fsync: bool = False,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
        isolation: bool | None = None,
    ) -> None:
        if not 1 <= size <= 32:
            raise ValueError(f"size must be between 1 and 32, got {size!r}")
        self.size = size
        self.binary = binary or find_etcd_binary()
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.fsync = fsync
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        # isolate() needs members under uids of their own (root) and iptables.
        if isolation is None:
            isolation = isolation_available()
        elif isolation:
            iptables_binary()  # the error that says what is missing
        self.isolation = isolation
        self.id = f"{os.getpid()}-{random.getrandbits(32):08x}"
        self.tag = rule_tag(self.id)
        self._firewall = Firewall(self.tag)
        self._locks: list[socket.socket] = []
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._members: list[Member] = []

    # -- what tests read ---------------------------------------------------------------------

    @property
    def members(self) -> list[Member]:
        return list(self._members)

    @property
    def endpoints(self) -> list[str]:
        """Every member's ``host:port``, in member order."""
        return [m.endpoint for m in self._members]

    def member(self, i: int) -> Member:
        if not self._members:
            raise RuntimeError("LocalEtcdCluster has not been started")
        return self._members[i]

    def index_of(self, endpoint: str) -> int:
        """The index of the member serving ``endpoint`` (``host:port``)."""
        for m in self._members:
            if m.endpoint == endpoint:
                return m.index
        raise ValueError(f"no member of this cluster serves {endpoint!r}")

    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self._members)

    def command(self, i: int) -> list[str]:
        m = self.member(i)
        restarting = (m.data_dir / "member").exists()
        args = [
            self.binary,
            "--name", m.name,
            "--data-dir", str(m.data_dir),
            "--listen-client-urls", m.client_url,
            "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url,
            "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", self.initial_cluster(),
            "--initial-cluster-token", self.tag,
            # Ignored once the data dir has a WAL: a restarted member rejoins as itself.
            "--initial-cluster-state", "existing" if restarting else "new",
            *tuning_flags(heartbeat_ms=self.heartbeat_ms, election_ms=self.election_ms,
                          fsync=self.fsync),
        ]  # fmt: skip
        return args + self.extra_args

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LocalEtcdCluster:
        """Start every member and wait until each serves with a leader elected."""
        if self._members:
            raise RuntimeError("LocalEtcdCluster is already started")
        try:
            if self.isolation:
                purge_stale_rules()
            hosts = self._reserve_addresses()
            self._dir = tempfile.TemporaryDirectory(prefix="lessor-etcd-cluster-")
            workdir = Path(self._dir.name)
            if self.isolation:
                workdir.chmod(0o711)  # members (other uids) pass through to their own dirs
            for i, host in enumerate(hosts):
                self._members.append(Member(i, host, workdir, isolatable=self.isolation))
            if self.isolation:
                for m in self._members:
                    assert m.uid is not None
                    self._firewall.mark(m.uid, m.mark)
            for m in self._members:
                m.spawn(self.command(m.index))
            deadline = time.monotonic() + self.startup_timeout
            for m in self._members:
                self._wait_serving(m, deadline)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Heal every member, kill them all, delete their data and release the addresses."""
        errors: list[BaseException] = []
        try:
            if self.isolation:
                self._firewall.delete_all()
        except BaseException as e:  # stop the members whatever happens
            errors.append(e)
        for m in self._members:
            m.isolated = False
            try:
                # Its data is deleted with it: a graceful stop would only take longer.
                m.close(graceful=False)
            except BaseException as e:
                errors.append(e)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
        self._members = []
        for lock in self._locks:
            lock.close()
        self._locks = []
        if errors:
            raise errors[0]

    def __enter__(self) -> LocalEtcdCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _reserve_addresses(self) -> list[str]:
        rng = random.Random()
        for _ in range(100):
            a, b = rng.randint(64, 254), rng.randint(0, 255)
            c = rng.randint(1, 254 - self.size)
            hosts = [f"127.{a}.{b}.{c + i}" for i in range(self.size)]
            locks: list[socket.socket] = []
            try:
                for host in hosts:
                    # An abstract unix socket: taken while bound, freed when its process
                    # ends, and scoped to the network namespace, as the address is.
                    lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    locks.append(lock)
                    lock.bind(f"\0lessor-etcd-cluster-{host}")
            except OSError:
                for lock in locks:
                    lock.close()
                continue
            self._locks = locks
            return hosts
        raise RuntimeError("no free block of loopback addresses for an etcd cluster")

    # -- readiness and leadership ------------------------------------------------------------

    def _wait_serving(self, m: Member, deadline: float) -> None:
        if not m.wait_ready(f"{m.client_url}/health", deadline):
            raise RuntimeError(f"etcd {m.name} at {m.endpoint} not healthy in time:\n"
                               f"{m.log_tail()}")  # fmt: skip

    def wait_serving(self, i: int, timeout: float = 30.0) -> None:
        """Wait until member ``i`` is healthy (it serves and knows a leader)."""
        self._wait_serving(self.member(i), time.monotonic() + timeout)

    def status(self, i: int, timeout: float = 0.5) -> MemberStatus | None:
        """Member ``i``'s Status answer, or None if it gives none within ``timeout``."""
        m = self.member(i)
        with grpc.insecure_channel(m.endpoint) as channel:
            status = member_status(channel, timeout)
        if status is not None:
            m.member_id = status.member_id
        return status

    def wait_for_leader(self, timeout: float = 10.0) -> int:
        """The index of the leader, once the reachable members agree that one leads
        (:func:`leader_of`); paused, isolated and stopped members are not asked."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            statuses = {
                m.index: s
                for m in self._members
                if m.reachable and (s := self.status(m.index)) is not None
            }
            found = leader_of(statuses)
            if found is not None:
                return found
            seen = [f"{self._members[i].name}: {s}" for i, s in statuses.items()]
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no etcd leader after {timeout}s; status: {seen or 'none'}")
            time.sleep(0.02)  # polling: etcd announces elections to no one

    def leader(self, timeout: float = 10.0) -> int:
        """The index of the current leader (waits up to ``timeout`` for one)."""
        return self.wait_for_leader(timeout)

    # -- faults ------------------------------------------------------------------------------

    def kill(self, i: int) -> None:
        """SIGKILL member ``i``, as a crash would; its data stays."""
        self.member(i).kill()

    def stop(self, i: int, timeout: float = 10.0) -> None:
        """Stop member ``i`` gracefully (SIGTERM; SIGKILL after ``timeout``); its data stays."""
        self.member(i).stop(timeout)

    def restart(self, i: int, *, wait: bool = True, timeout: float = 30.0) -> None:
        """Start member ``i`` again on its data dir (killing it first if it runs).

        With ``wait``, return once it is healthy, which needs a quorum of members up.
        """
        m = self.member(i)
        m.kill()
        m.spawn(self.command(i))
        if wait:
            self._wait_serving(m, time.monotonic() + timeout)

    def pause(self, i: int) -> None:
        """SIGSTOP member ``i``: its connections stay open, but it answers nothing."""
        self.member(i).pause()

    def resume(self, i: int) -> None:
        self.member(i).resume()

    def isolate(self, i: int) -> None:
        """Cut member ``i`` off from its peers and its clients, both ways (root + iptables)."""
        m = self.member(i)
        if m.isolated:
            return
        iptables_binary()  # the error that says what is missing
        if not self.isolation or m.uid is None:
            raise RuntimeError(
                "LocalEtcdCluster.isolate needs root and iptables when the cluster starts: "
                "this one was started with isolation off"
            )
        m.isolated = True
        self._firewall.cut(i, m.uid, m.mark, m.host)

    def heal(self, i: int | None = None) -> None:
        """Undo :meth:`isolate` of member ``i``, or of every member."""
        for index in self._firewall.cut_keys if i is None else [i]:
            self._firewall.heal(index)
            self.member(index).isolated = False

    @contextlib.contextmanager
    def isolated(self, i: int) -> Iterator[Member]:
        """``with cluster.isolated(i):`` member ``i`` is cut off inside the block."""
        self.isolate(i)
        try:
            yield self.member(i)
        finally:
            self.heal(i)

    @contextlib.contextmanager
    def paused(self, i: int) -> Iterator[Member]:
        """``with cluster.paused(i):`` member ``i`` is stopped (SIGSTOP) inside the block."""
        self.pause(i)
        try:
            yield self.member(i)
        finally:
            self.resume(i)
