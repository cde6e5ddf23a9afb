"""A throw-away etcd cluster on loopback, with fault injection, for failover tests.

``LocalEtcdCluster(size=3)`` starts ``size`` etcd members, each its own process in its own
temporary directory, listening on its own loopback address ``127.a.b.(c+i)`` with free ports,
and tuned like :class:`~lessor.etcd.local.LocalEtcd`: 50 ms heartbeat, 500 ms election
timeout, no fsync unless asked, revision auto-compaction on, quiet log. It is a context
manager; closing it kills every member, removes its firewall rules and deletes its data.

Faults, by member index:

* :meth:`~LocalEtcdCluster.kill` (SIGKILL, a crash), :meth:`~LocalEtcdCluster.stop` (SIGTERM),
  :meth:`~LocalEtcdCluster.restart` (same data dir and flags; etcd ignores the
  ``--initial-cluster*`` flags once it has a WAL, and rejoins as the member it was);
* :meth:`~LocalEtcdCluster.pause` / :meth:`~LocalEtcdCluster.resume` (SIGSTOP / SIGCONT: the
  kernel still accepts connections and buffers requests, but nothing answers);
* :meth:`~LocalEtcdCluster.isolate` / :meth:`~LocalEtcdCluster.heal`: a network partition of
  one member from its peers *and* its clients, in both directions.

How isolation works, and why this way. On loopback the obvious rule — drop what comes from
the member's address — is not enough: a member's outgoing connections (to its peers' raft
ports) are not bound to its own address, so the kernel gives them source address 127.0.0.1.
And raft messages flow *both* ways on one connection: a member receives its peers' messages on
streams it dialled itself. So, as root, each member runs under a uid of its own (unused by
anything else; derived from its address), and every packet on ``lo`` traverses ``OUTPUT``
exactly once:

* while the cluster lives, ``-m owner --uid-owner U -j CONNMARK --set-mark M`` marks in
  conntrack every connection member i takes part in, from its first packet (its SYN, or its
  SYN-ACK);
* ``isolate(i)`` inserts ``-m owner --uid-owner U -j DROP`` (everything member i sends),
  ``-m connmark --mark M -j DROP`` (everything its peers send on those connections, including
  the ones member i dialled from 127.0.0.1, and what the kernel sends for a socket whose owner
  is gone) and ``-d 127.a.b.(c+i) -j DROP`` (every new connection to member i, from peers or
  clients).

Checked with ``ss``: an isolated member's sockets receive not one byte until ``heal(i)``
deletes those three rules (marking only at ``isolate`` time let one segment through on each
connection that member i had not sent on since). TCP then retransmits and the connections
carry on (or time out and are redialled). Rules carry the comment ``lessor-cluster-<pid>-<id>``
and :meth:`~LocalEtcdCluster.close` deletes every rule with its comment, whatever happened
before; a new cluster also deletes rules left by clusters of processes that no longer exist (a
test run that was SIGKILLed).

Why not userspace proxies (:mod:`lessor.etcd.proxy`)? A proxy in front of each member's
client and peer ports cuts what is sent *to* the member, but not what the member sends: its
connections to its peers' proxies arrive from 127.0.0.1, like everybody else's, so a peer's
proxy cannot tell which member dialled it, and every member dials every peer. Per-pair proxies
with distinct advertised peer URLs would do, at the price of N·(N-1) proxies and peer URLs that
differ from the members' real ones. The rules above cut exactly one member, on its real
addresses, both ways, and fail closed.

:meth:`~LocalEtcdCluster.isolate` needs root and ``iptables`` (Debian: ``apt-get install
iptables``; the kernel needs the ``owner``, ``connmark`` and ``comment`` matches) when the
cluster starts (``isolation=None``, the default, turns it on when both are there; ``True``
insists), and says so when it has neither. Everything else works unprivileged: the members
then run as the caller.

Addresses: each cluster picks a random ``127.a.b.c`` block (``a`` >= 64, away from the usual
``127.0.0.x``) and binds an abstract unix socket named after each address while it lives, so
concurrent test runs never share an address, a uid or a mark.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import grpc

from lessor.testing.local import find_etcd_binary, free_ports, tuning_flags, wait_healthy

__all__ = ["LocalEtcdCluster", "Member", "MemberStatus"]

_UID_BASE = 0x40000000  # members' uids: this plus the 24 low bits of their address
_MARK_BASE = 0x4C000000  # conntrack marks, likewise
_TAG_PREFIX = "lessor-cluster-"
_TAG = re.compile(rf"{_TAG_PREFIX}(\d+)-[0-9a-f]+")

# Run as argv[1]'s uid, with no supplementary groups, then exec the rest of argv. Popen's own
# user=/group= make it fork() rather than vfork(), and fork() runs gRPC's atfork handlers: in a
# process that uses gRPC (every lessor test) that deadlocked the parent in fork() or crashed
# the child. A tiny interpreter that switches user itself keeps Popen on vfork().
_AS_USER = (
    "import os, sys; uid = int(sys.argv[1]); os.setgroups([]); os.setgid(uid); "
    "os.setuid(uid); os.execv(sys.argv[2], sys.argv[2:])"
)


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """One member's answer to etcd's maintenance ``Status`` RPC."""

    member_id: int
    leader_id: int  # 0 when the member knows of no leader
    raft_term: int
    raft_index: int
    revision: int


class Member:
    """One etcd process of a :class:`LocalEtcdCluster`; the cluster drives it."""

    def __init__(self, index: int, host: str, workdir: Path, uid: int | None, mark: int) -> None:
        self.index = index
        self.name = f"m{index}"
        self.host = host
        self.client_port, self.peer_port = free_ports(2, host)
        self.uid = uid  # None: runs as the caller
        self.mark = mark
        self.dir = workdir / self.name
        self.member_id: int | None = None  # etcd's id, learned from the first Status answer
        self.paused = False
        self.isolated = False
        self._process: subprocess.Popen[bytes] | None = None

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
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        return self.dir / "etcd.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """The process exists (it may be paused or isolated)."""
        return self._process is not None and self._process.poll() is None

    @property
    def reachable(self) -> bool:
        """Running, not paused and not isolated: it should answer."""
        return self.running and not self.paused and not self.isolated

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _spawn(self, command: list[str]) -> None:
        self.dir.mkdir(mode=0o700, exist_ok=True)
        if self.uid is not None:
            os.chown(self.dir, self.uid, self.uid)
            for path in self.dir.rglob("*"):
                os.lchown(path, self.uid, self.uid)
        # etcd reads ETCD_* variables too, and refuses to start when one shadows a flag.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        if self.uid is not None:
            command = [sys.executable, "-I", "-S", "-c", _AS_USER, str(self.uid), *command]
        log = open(self.log_path, "ab")  # noqa: SIM115  (the child owns it)
        try:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=log, env=env, start_new_session=True
            )
        finally:
            log.close()
        self.paused = False

    def _signal(self, sig: signal.Signals) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(sig)

    def _kill(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self.paused = False

    def _stop(self, timeout: float) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            self.paused = False
            return
        process.send_signal(signal.SIGCONT)  # a paused etcd cannot act on SIGTERM
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self.paused = False


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
            isolation = os.geteuid() == 0 and shutil.which("iptables") is not None
        elif isolation:
            _iptables_binary()  # the error that says what is missing
        self.isolation = isolation
        self.id = f"{os.getpid()}-{random.getrandbits(32):08x}"
        self.tag = f"{_TAG_PREFIX}{self.id}"
        self._locks: list[socket.socket] = []
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._members: list[Member] = []
        self._rules: dict[int, list[list[str]]] = {}  # member index -> iptables rule specs

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
                _purge_stale_rules()
            hosts = self._reserve_addresses()
            self._dir = tempfile.TemporaryDirectory(prefix="lessor-etcd-cluster-")
            workdir = Path(self._dir.name)
            if self.isolation:
                workdir.chmod(0o711)  # members (other uids) pass through to their own dirs
            for i, host in enumerate(hosts):
                low = _low_bits(host)
                uid = _UID_BASE + low if self.isolation else None
                self._members.append(Member(i, host, workdir, uid, _MARK_BASE + low))
            if self.isolation:
                for m in self._members:
                    self._mark_connections(m)
            for m in self._members:
                self._spawn(m.index)
            deadline = time.monotonic() + self.startup_timeout
            for m in self._members:
                self._wait_serving(m, deadline)
        except BaseException:
            self.close()
            raise
        return self

    def _spawn(self, i: int) -> None:
        self.member(i)._spawn(self.command(i))

    def close(self) -> None:
        """Heal every member, kill them all, delete their data and release the addresses."""
        errors: list[BaseException] = []
        try:
            self._delete_all_rules()
        except BaseException as e:  # stop the members whatever happens
            errors.append(e)
        for m in self._members:
            m.isolated = False
            try:
                m._kill()  # its data is deleted next: a graceful stop would only take longer
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
        def exited() -> str | None:
            if m.running:
                return None
            hint = ""
            if m.uid is not None:
                hint = (
                    f" (it runs as uid {m.uid}: the binary and its directories must be "
                    "executable by other users, else pass isolation=False)"
                )
            code = m._process and m._process.returncode
            return f"etcd {m.name} exited with code {code} while starting{hint}:\n{m.log_tail()}"

        if not wait_healthy(f"{m.client_url}/health", deadline, exited):
            raise RuntimeError(f"etcd {m.name} at {m.endpoint} not healthy in time:\n"
                               f"{m.log_tail()}")  # fmt: skip

    def wait_serving(self, i: int, timeout: float = 30.0) -> None:
        """Wait until member ``i`` is healthy (it serves and knows a leader)."""
        self._wait_serving(self.member(i), time.monotonic() + timeout)

    def status(self, i: int, timeout: float = 0.5) -> MemberStatus | None:
        """Member ``i``'s Status answer, or None if it gives none within ``timeout``."""
        import pyetcd.etcdrpc as rpc  # noqa: PLC0415  (the stubs lessor.etcd already uses)

        m = self.member(i)
        with grpc.insecure_channel(m.endpoint) as channel:
            try:
                response = rpc.MaintenanceStub(channel).Status(rpc.StatusRequest(), timeout=timeout)
            except grpc.RpcError:
                return None
        status = MemberStatus(
            member_id=response.header.member_id,
            leader_id=response.leader,
            raft_term=response.raftTerm,
            raft_index=response.raftIndex,
            revision=response.header.revision,
        )
        m.member_id = status.member_id
        return status

    def wait_for_leader(self, timeout: float = 10.0) -> int:
        """The index of the leader, once the reachable members agree that one leads.

        A leader counts when it is reachable, claims the leadership itself, and no reachable
        member reports a later term; paused, isolated and stopped members are not asked.
        """
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            statuses = {
                m.index: s
                for m in self._members
                if m.reachable and (s := self.status(m.index)) is not None
            }
            found = self._leader_of(statuses)
            if found is not None:
                return found
            seen = [f"{self._members[i].name}: {s}" for i, s in statuses.items()]
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no etcd leader after {timeout}s; status: {seen or 'none'}")
            time.sleep(0.02)  # polling: etcd announces elections to no one

    def leader(self, timeout: float = 10.0) -> int:
        """The index of the current leader (waits up to ``timeout`` for one)."""
        return self.wait_for_leader(timeout)

    def _leader_of(self, statuses: dict[int, MemberStatus]) -> int | None:
        if not statuses:
            return None
        term = max(s.raft_term for s in statuses.values())
        for i, s in statuses.items():
            if s.raft_term == term and s.leader_id != 0 and s.leader_id == s.member_id:
                return i
        return None

    # -- faults ------------------------------------------------------------------------------

    def kill(self, i: int) -> None:
        """SIGKILL member ``i``, as a crash would; its data stays."""
        self.member(i)._kill()

    def stop(self, i: int, timeout: float = 10.0) -> None:
        """Stop member ``i`` gracefully (SIGTERM; SIGKILL after ``timeout``); its data stays."""
        self.member(i)._stop(timeout)

    def restart(self, i: int, *, wait: bool = True, timeout: float = 30.0) -> None:
        """Start member ``i`` again on its data dir (killing it first if it runs).

        With ``wait``, return once it is healthy, which needs a quorum of members up.
        """
        m = self.member(i)
        m._kill()
        self._spawn(i)
        if wait:
            self._wait_serving(m, time.monotonic() + timeout)

    def pause(self, i: int) -> None:
        """SIGSTOP member ``i``: its connections stay open, but it answers nothing."""
        m = self.member(i)
        m._signal(signal.SIGSTOP)
        m.paused = m.running

    def resume(self, i: int) -> None:
        m = self.member(i)
        m._signal(signal.SIGCONT)
        m.paused = False

    def isolate(self, i: int) -> None:
        """Cut member ``i`` off from its peers and its clients, both ways (root + iptables)."""
        m = self.member(i)
        if m.isolated:
            return
        iptables = _iptables_binary()
        if not self.isolation or m.uid is None:
            raise RuntimeError(
                "LocalEtcdCluster.isolate needs root and iptables when the cluster starts: "
                "this one was started with isolation off"
            )
        comment = ["-m", "comment", "--comment", self.tag]
        rules = [
            [*comment, "-m", "owner", "--uid-owner", str(m.uid), "-j", "DROP"],
            [*comment, "-m", "connmark", "--mark", f"0x{m.mark:x}", "-j", "DROP"],
            [*comment, "-d", f"{m.host}/32", "-j", "DROP"],
        ]
        added = self._rules.setdefault(i, [])
        m.isolated = True
        for rule in reversed(rules):  # each goes first: the list's order is the chain's
            _run(iptables, "-I", "OUTPUT", "1", *rule)
            added.append(rule)

    def _mark_connections(self, m: Member) -> None:
        """Mark in conntrack every connection member ``m`` sends on, from its first packet
        (a SYN, a SYN-ACK); the mark is what lets isolate() drop what its peers send back."""
        _run(
            _iptables_binary(),
            "-I", "OUTPUT", "1",
            "-m", "comment", "--comment", self.tag,
            "-m", "owner", "--uid-owner", str(m.uid),
            "-j", "CONNMARK", "--set-mark", f"0x{m.mark:x}",
        )  # fmt: skip

    def heal(self, i: int | None = None) -> None:
        """Undo :meth:`isolate` of member ``i``, or of every member."""
        indices = list(self._rules) if i is None else [i]
        for index in indices:
            rules = self._rules.get(index, [])
            while rules:
                _run(_iptables_binary(), "-D", "OUTPUT", *rules[-1])
                rules.pop()
            self._rules.pop(index, None)
            self.member(index).isolated = False

    def _delete_all_rules(self) -> None:
        self._rules.clear()
        if self.isolation:
            _delete_rules(lambda tag: tag == self.tag)
            listing = _run(_iptables_binary(), "-S", "OUTPUT")
            left = [line for line in listing.splitlines() if self.tag in line]
            if left:
                raise RuntimeError(f"could not delete iptables rules: {left}")

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


def _low_bits(host: str) -> int:
    _, a, b, c = (int(x) for x in host.split("."))
    return (a << 16) | (b << 8) | c


def _iptables_binary() -> str:
    if os.geteuid() != 0:
        raise RuntimeError("LocalEtcdCluster.isolate needs root and iptables: not running as root")
    found = shutil.which("iptables")
    if found is None:
        raise RuntimeError(
            "LocalEtcdCluster.isolate needs root and iptables: no iptables on PATH "
            "(Debian: apt-get install iptables)"
        )
    return found


def _run(iptables: str, *args: str, check: bool = True) -> str:
    done = subprocess.run(
        [iptables, "-w", "10", *args], capture_output=True, text=True, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(
            f"iptables {shlex.join(args)} failed ({done.returncode}): {done.stderr.strip()}"
        )
    return done.stdout


def _delete_rules(select: Callable[[str], bool]) -> None:
    """Delete every OUTPUT rule whose lessor-cluster comment ``select(tag)`` accepts."""
    iptables = _iptables_binary()
    for line in _run(iptables, "-S", "OUTPUT").splitlines():
        words = shlex.split(line)
        if words[:2] != ["-A", "OUTPUT"]:
            continue
        tags = [w for w in words if _TAG.fullmatch(w)]
        if tags and select(tags[0]):
            # Another process purging the same stale rules may have deleted it already.
            _run(iptables, "-D", "OUTPUT", *words[2:], check=False)


def _purge_stale_rules() -> None:
    """Delete rules left by clusters whose process is gone (a SIGKILLed test run)."""
    if os.geteuid() != 0 or shutil.which("iptables") is None:
        return

    def stale(tag: str) -> bool:
        match = _TAG.fullmatch(tag)
        return match is not None and not Path(f"/proc/{match.group(1)}").exists()

    _delete_rules(stale)
