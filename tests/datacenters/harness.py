"""Three datacenters on one machine: network namespaces joined by a bridge, an etcd member
and worker processes in each, and a delaying userspace proxy on every link between them.

Layout of one run (names carry the test process's pid and a random tag)::

    root namespace: bridge lsb<tag> (no address)
      ├─ veth lsv0<tag> ── namespace lessor-dc0-<pid>-<tag>: eth0 10.213.0.1/24
      ├─ veth lsv1<tag> ── namespace lessor-dc1-<pid>-<tag>: eth0 10.213.0.2/24
      └─ veth lsv2<tag> ── namespace lessor-dc2-<pid>-<tag>: eth0 10.213.0.3/24

Each datacenter ``i`` has two addresses:

* its **link** address ``10.213.0.(i+1)`` on ``eth0``, the only one that crosses the bridge;
* its **service** address ``10.213.1.(i+1)``: what member ``i`` advertises, as its one peer
  URL and its client URL, and what every client dials.

The peer URL is the subtle point: etcd gives each member one advertised peer URL that all
its peers dial. So the service addresses of *all* datacenters are put on ``lo`` (as /32) in
*every* namespace. In namespace ``i`` the service address ``i`` is member ``i`` itself (it
listens on its service and its link address). In namespace ``j != i`` it belongs to the
datacenter agent of ``j`` (``dc_agent.py``), whose :class:`~lessor.testing.FaultProxy`
listens there on etcd's peer and client ports and forwards across the bridge to the link
address of ``i``, delaying every chunk by ``delay`` each way. So every byte between two
datacenters — raft between members, and a client talking to a remote member — crosses
exactly one delaying proxy, while traffic inside a datacenter stays on its loopback. Nothing
is addressed in the root namespace: the test sees inside only through the agents.

Losing a datacenter: :meth:`Datacenters.cut` sets its veth down (its bridge link: from then
on its packets go nowhere, and nothing answers the others, as when a site loses power), and
:meth:`Datacenters.kill` SIGKILLs its member, its workers and its agent.

Cleanup: every process is started as ``setpriv --pdeathsig KILL ip netns exec <ns> <argv>``
(both ``exec``, so the pid is the program's own, and it dies with the test process even if
that is SIGKILLed) and killed by its pid; :meth:`Datacenters.close` then kills whatever still
runs in our namespaces (by pid), deletes the namespaces and the bridge, and checks that no
interface of this run is left. A new run deletes namespaces and bridges left by runs whose
process no longer exists.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from lessor.testing import MemberStatus, find_etcd_binary, leader_of, tuning_flags
from lessor.testing.child import Child, Sink
from tests.support import needs
from tests.support.programs import ROOT, python_module

__all__ = ["HOLDER", "Datacenters", "Unsupported", "unsupported_reason"]

AGENT = Path(__file__).with_name("dc_agent.py")
WORKER = Path(__file__).parents[1] / "safety" / "worker.py"
HOLDER = Path(__file__).with_name("dc_holder.py")

CLIENT_PORT = 2379
PEER_PORT = 2380
_LINK_NET = "10.213.0"
_SERVICE_NET = "10.213.1"
_NS_PREFIX = "lessor-dc"
_NS_NAME = re.compile(rf"{_NS_PREFIX}\d+-(\d+)-([0-9a-f]{{6}})")
_PDEATHSIG = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []


class Unsupported(RuntimeError):
    """This machine cannot build network namespaces (not root, no ``ip netns``)."""


def unsupported_reason() -> str | None:
    """Why namespaces cannot be built here, or None when they (probably) can."""
    reason = needs.why_not_root_with("ip")
    if reason is not None:
        return reason
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"`ip netns list` failed: {done.stderr.strip()}"
    return None


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def purge_stale() -> list[str]:
    """Delete namespaces (and their bridge) of runs whose process is gone; what was deleted.

    Their processes died with the run (``--pdeathsig``); none is killed here, and a namespace
    in which anything still runs is left alone."""
    deleted = []
    for line in _ip("netns", "list").splitlines():
        name = line.split()[0] if line.split() else ""
        match = _NS_NAME.fullmatch(name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        try:
            if _ip("netns", "pids", name).split():
                continue
        except RuntimeError:
            continue
        with contextlib.suppress(RuntimeError):
            _ip("netns", "del", name)
            deleted.append(name)
        bridge = f"lsb{match.group(2)}"
        if _link_exists(bridge):
            with contextlib.suppress(RuntimeError):
                _ip("link", "del", bridge)
                deleted.append(bridge)
    return deleted


class Network:
    """The namespaces, veths and bridge of one run."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.tag = secrets.token_hex(3)
        self.namespaces = [f"{_NS_PREFIX}{i}-{os.getpid()}-{self.tag}" for i in range(size)]
        self.bridge = f"lsb{self.tag}"
        self.veths = [f"lsv{i}{self.tag}" for i in range(size)]
        self._made: list[str] = []  # namespaces created, in order

    @staticmethod
    def link_address(i: int) -> str:
        return f"{_LINK_NET}.{i + 1}"

    @staticmethod
    def service_address(i: int) -> str:
        return f"{_SERVICE_NET}.{i + 1}"

    def create(self) -> None:
        purge_stale()
        try:
            first = self.namespaces[0]
            try:
                _ip("netns", "add", first)
            except RuntimeError as e:
                raise Unsupported(f"cannot create a network namespace: {e}") from None
            self._made.append(first)
            try:  # `ip -n` enters it (a mount namespace of its own, with / made a slave)
                _ip("-n", first, "link", "set", "lo", "up")
            except RuntimeError as e:
                raise Unsupported(f"cannot enter a network namespace: {e}") from None
            for ns in self.namespaces[1:]:
                _ip("netns", "add", ns)
                self._made.append(ns)
            _ip("link", "add", self.bridge, "type", "bridge")
            _no_ipv6(self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i, ns in enumerate(self.namespaces):
                veth = self.veths[i]
                _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
                _no_ipv6(veth)
                _ip("link", "set", veth, "master", self.bridge, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", ns, "addr", "add", f"{self.link_address(i)}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                for k in range(self.size):
                    _ip("-n", ns, "addr", "add", f"{self.service_address(k)}/32", "dev", "lo")
        except BaseException:
            self.destroy()
            raise

    def set_link(self, i: int, up: bool) -> None:
        _ip("link", "set", self.veths[i], "up" if up else "down")

    def destroy(self) -> list[str]:
        """Kill what still runs in our namespaces, delete them and the bridge; raise if any
        interface of this run is left. Returns a note per process it had to kill."""
        notes = []
        errors = []
        for ns in self._made:
            pids = []
            with contextlib.suppress(RuntimeError):
                pids = [int(p) for p in _ip("netns", "pids", ns).split()]
            for pid in pids:
                notes.append(f"killed pid {pid} left in {ns}")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _wait_for(lambda pids=pids: not any(_pid_alive(p) for p in pids), 5.0)
            try:
                _ip("netns", "del", ns)
            except RuntimeError as e:
                errors.append(str(e))
        self._made = []
        links = [self.bridge, *self.veths]
        for link in links:
            if _link_exists(link):
                with contextlib.suppress(RuntimeError):  # a veth may go with its peer meanwhile
                    _ip("link", "del", link)
        # A veth goes when its namespace does, which the kernel finishes asynchronously.
        _wait_for(lambda: not any(_link_exists(link) for link in links), 5.0)
        left = [link for link in links if _link_exists(link)]
        if left:
            errors.append(f"interfaces left behind: {left}")
        if errors:
            raise RuntimeError("; ".join(errors))
        return notes


def _no_ipv6(link: str) -> None:
    """No IPv6 autoconfiguration chatter from our interfaces in the root namespace."""
    path = Path("/proc/sys/net/ipv6/conf", link, "disable_ipv6")
    with contextlib.suppress(OSError):
        path.write_text("1")


def _wait_for(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)  # polling the kernel, which has no completion signal for these
    return True


def in_namespace(ns: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run in namespace ``ns``, dying with the test process (``--pdeathsig``)."""
    return [*_PDEATHSIG, "ip", "netns", "exec", ns, *argv]


class Agent(Child):
    """A datacenter's ``dc_agent.py``: its proxies, and probes from inside its namespace."""

    def ask(self, request: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        self.send(json.dumps(request))
        reply: dict[str, Any] = json.loads(self.expect(timeout))
        if "error" in reply:
            raise RuntimeError(f"{self.name}: {request['cmd']} failed: {reply['error']}")
        return reply


class Datacenter:
    """One datacenter: its namespace, addresses and processes."""

    def __init__(self, index: int, ns: str) -> None:
        self.index = index
        self.name = f"dc{index}"
        self.ns = ns
        self.link_address = Network.link_address(index)
        self.service_address = Network.service_address(index)
        self.agent: Agent | None = None
        self.member: Child | None = None
        self.workers: list[Child] = []
        self.killed_at: float | None = None

    @property
    def endpoint(self) -> str:
        """The member's client endpoint (local in this namespace, proxied in the others)."""
        return f"{self.service_address}:{CLIENT_PORT}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.service_address}:{PEER_PORT}"

    def processes(self) -> list[Child]:
        return [*self.workers, *(p for p in (self.member, self.agent) if p is not None)]

    def ask(self, request: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        if self.agent is None or not self.agent.running:
            raise RuntimeError(f"{self.name} has no running agent")
        return self.agent.ask(request, timeout)


class Datacenters:
    """``size`` datacenters, an etcd member and an agent in each; a context manager.

    ``delay`` is the one-way latency between any two datacenters (seconds); ``heartbeat_ms``
    and ``election_ms`` tune etcd for it.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        size: int = 3,
        delay: float = 0.005,
        heartbeat_ms: int = 100,
        election_ms: int = 1000,
        binary: str | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.workdir = workdir
        self.delay = delay
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.binary = binary or find_etcd_binary()
        self.startup_timeout = startup_timeout
        self.startup_seconds = 0.0  # how long start() took
        self.network = Network(size)
        self.dcs = [Datacenter(i, ns) for i, ns in enumerate(self.network.namespaces)]

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Datacenters:
        started = time.monotonic()
        try:
            self.network.create()
            for dc in self.dcs:
                self._start_agent(dc)
            for dc in self.dcs:
                assert dc.agent is not None
                assert json.loads(dc.agent.expect(self.startup_timeout)) == {"ready": True}
            for dc in self.dcs:
                self._start_member(dc)
            self._wait_serving(time.monotonic() + self.startup_timeout)
            self.startup_seconds = time.monotonic() - started
        except BaseException as e:
            logs = "\n".join(
                f"--- {p.name}:\n{tail}"
                for dc in self.dcs
                for p in dc.processes()
                if (tail := p.log_tail())
            )
            try:
                self.close()
            finally:
                if not isinstance(e, Unsupported):
                    e.add_note(f"datacenters failed to start; logs:\n{logs}")
            raise
        return self

    def _wait_serving(self, deadline: float) -> None:
        """Until every member names a leader; fails early if a member exits."""
        waiting = list(self.dcs)
        while waiting:
            for dc in list(waiting):
                assert dc.member is not None
                if not dc.member.running:
                    raise RuntimeError(
                        f"{dc.member.name} exited with status {dc.member.proc.returncode} while "
                        f"starting:\n{dc.member.log_tail()}"
                    )
                status = self.status(dc.index)
                if status is not None and status.leader_id != 0:
                    waiting.remove(dc)
            if not waiting:
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"etcd members of {[dc.name for dc in waiting]} name no leader after "
                    f"{self.startup_timeout}s"
                )
            time.sleep(0.05)  # polling: etcd announces its elections to no one

    def _start_agent(self, dc: Datacenter) -> None:
        proxies = [
            {
                "name": f"{other.name}-{kind}",
                "listen": f"{other.service_address}:{port}",
                "target": f"{other.link_address}:{port}",
                "delay": self.delay,
            }
            for other in self.dcs
            if other is not dc
            for kind, port in (("client", CLIENT_PORT), ("peer", PEER_PORT))
        ]
        config = {"name": dc.name, "proxies": proxies}
        dc.agent = Agent(
            f"{dc.name} agent",
            in_namespace(dc.ns, [sys.executable, str(AGENT), json.dumps(config)]),
            log=self.workdir / f"{dc.name}-agent.log",
            new_session=True,  # a ^C reaches the test, which then ends us in order
        )

    def _start_member(self, dc: Datacenter) -> None:
        data = self.workdir / f"{dc.name}-etcd"
        data.mkdir(mode=0o700, exist_ok=True)

        def urls(port: int) -> str:
            return f"http://{dc.service_address}:{port},http://{dc.link_address}:{port}"

        cluster = ",".join(f"{d.name}={d.peer_url}" for d in self.dcs)
        argv = [
            self.binary,
            "--name", dc.name,
            "--data-dir", str(data),
            "--listen-client-urls", urls(CLIENT_PORT),
            "--advertise-client-urls", f"http://{dc.endpoint}",
            "--listen-peer-urls", urls(PEER_PORT),
            "--initial-advertise-peer-urls", dc.peer_url,
            "--initial-cluster", cluster,
            "--initial-cluster-token", f"lessor-dc-{self.network.tag}",
            "--initial-cluster-state", "new",
            *tuning_flags(heartbeat_ms=self.heartbeat_ms, election_ms=self.election_ms,
                          fsync=False),
        ]  # fmt: skip
        dc.member = Child(
            f"{dc.name} etcd",
            in_namespace(dc.ns, argv),
            log=self.workdir / f"{dc.name}-etcd.log",
            lines=False,
            # etcd reads ETCD_* variables too, and refuses to start when one shadows a flag.
            env={k: v for k, v in os.environ.items() if not k.startswith("ETCD_")},
            new_session=True,
        )

    def close(self) -> None:
        """Kill every process (by pid), then delete the namespaces and the bridge."""
        errors: list[BaseException] = []
        ordered = [p for dc in self.dcs for p in (*dc.workers, dc.member) if p is not None]
        ordered += [dc.agent for dc in self.dcs if dc.agent is not None]
        for p in ordered:
            try:
                p.close(grace=2.0 if isinstance(p, Agent) else 0.0)
            except BaseException as e:  # end the others and delete the network first
                errors.append(e)
        try:
            left = self.network.destroy()
        except BaseException as e:
            errors.append(e)
        else:
            if left:
                errors.append(RuntimeError(f"processes outlived the test: {'; '.join(left)}"))
        if errors:
            raise errors[0]

    def __enter__(self) -> Datacenters:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- what the test sees --------------------------------------------------------------------

    def endpoints(self, j: int) -> list[str]:
        """Client endpoints for datacenter ``j``: its own member first, then the others."""
        return [self.dcs[(j + k) % len(self.dcs)].endpoint for k in range(len(self.dcs))]

    def status(self, j: int) -> MemberStatus | None:
        """Member ``j``'s status, asked from inside its datacenter; None if it does not answer."""
        status: dict[str, int] | None = self.dcs[j].ask(
            {"cmd": "status", "endpoint": self.dcs[j].endpoint}
        )["status"]
        return MemberStatus(**status) if status is not None else None

    def leader(self, among: Sequence[int] | None = None) -> tuple[int, int] | None:
        """``(datacenter index, term)`` of the leader the live members of ``among`` agree on
        in their latest term (:func:`lessor.testing.leader_of`), or None."""
        indices = [i for i in (among if among is not None else range(len(self.dcs)))
                   if self.dcs[i].killed_at is None]  # fmt: skip
        statuses = {i: s for i in indices if (s := self.status(i)) is not None}
        found = leader_of(statuses)
        return None if found is None else (found, statuses[found].raft_term)

    def wait_for_leader(
        self, among: Sequence[int], *, after_term: int, timeout: float
    ) -> tuple[int, int]:
        """``(datacenter, term)`` of a leader of a term later than ``after_term`` that the
        live members of ``among`` agree on; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.leader(among)
            if found is not None and found[1] > after_term:
                return found
            time.sleep(0.05)  # polling: etcd announces its elections to no one
        raise AssertionError(f"no new leader among datacenters {list(among)} in {timeout}s")

    def members(self, j: int) -> list[dict[str, Any]]:
        members: list[dict[str, Any]] = self.dcs[j].ask(
            {"cmd": "members", "endpoint": self.dcs[j].endpoint}
        )["members"]
        return members

    def round_trips(self, j: int, target: int, op: str, n: int) -> list[float]:
        """``n`` timed etcd calls (ms) from inside datacenter ``j`` to member ``target``."""
        times: list[float] = self.dcs[j].ask(
            {"cmd": "rtt", "endpoint": self.dcs[target].endpoint, "op": op, "n": n}
        )["ms"]
        return times

    # -- workers and faults -----------------------------------------------------------------

    def start_worker(
        self, j: int, config: dict[str, Any], *, program: Path = WORKER, sink: Sink | None = None
    ) -> Child:
        """A worker ``program`` (``tests/safety/worker.py`` unless said) in datacenter ``j``,
        given ``config`` as JSON. Without a ``sink`` it has printed "ready" on return; with
        one, its lines (that one too) go to the sink."""
        dc = self.dcs[j]
        worker = Child(
            f"{dc.name} worker {config['worker']}",
            in_namespace(dc.ns, python_module(program, json.dumps(config))),
            log=self.workdir / f"{dc.name}-worker-{config['worker']}.log",
            sink=sink,
            cwd=ROOT,
            new_session=True,
        )
        dc.workers.append(worker)
        if sink is None:
            line = worker.expect(self.startup_timeout)
            assert line == "ready", f"{worker.name} said {line!r}; log:\n{worker.log_tail()}"
        return worker

    def cut(self, k: int) -> float:
        """Set datacenter ``k``'s bridge link down; the monotonic time it went down."""
        self.network.set_link(k, up=False)
        return time.monotonic()

    def kill(self, k: int) -> float:
        """SIGKILL every process of datacenter ``k``: workers, member, agent. The time."""
        dc = self.dcs[k]
        for p in dc.processes():  # all at once, as in a power cut; then reaped
            p.signal(signal.SIGKILL)
        for p in dc.processes():
            p.kill()
        dc.killed_at = time.monotonic()
        return dc.killed_at
