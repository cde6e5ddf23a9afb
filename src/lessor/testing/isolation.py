"""Network partitions of one etcd member on loopback, with iptables: what
:meth:`LocalEtcdCluster.isolate <lessor.testing.LocalEtcdCluster.isolate>` does.

A partition cuts one member from its peers *and* its clients, in both directions. On loopback
the obvious rule — drop what comes from the member's address — is not enough: a member's
outgoing connections (to its peers' raft ports) are not bound to its own address, so the kernel
gives them source address 127.0.0.1. And raft messages flow *both* ways on one connection: a
member receives its peers' messages on streams it dialled itself. So, as root, each member runs
under a uid of its own (unused by anything else; :func:`identity` derives it from its address),
and every packet on ``lo`` traverses ``OUTPUT`` exactly once:

* while the cluster lives, ``-m owner --uid-owner U -j CONNMARK --set-mark M`` marks in
  conntrack every connection member i takes part in, from its first packet (its SYN, or its
  SYN-ACK) (:meth:`Firewall.mark`);
* :meth:`Firewall.cut` inserts ``-m owner --uid-owner U -j DROP`` (everything member i sends),
  ``-m connmark --mark M -j DROP`` (everything its peers send on those connections, including
  the ones member i dialled from 127.0.0.1, and what the kernel sends for a socket whose owner
  is gone) and ``-d 127.a.b.(c+i) -j DROP`` (every new connection to member i, from peers or
  clients).

Checked with ``ss``: an isolated member's sockets receive not one byte until
:meth:`Firewall.heal` deletes those three rules (marking only at cut time let one segment
through on each connection that member i had not sent on since). TCP then retransmits and the
connections carry on (or time out and are redialled). Rules carry the comment
``lessor-cluster-<pid>-<id>-ns<pid namespace>`` (:func:`rule_tag`) and
:meth:`Firewall.delete_all` deletes every rule with its comment, whatever happened before;
:func:`purge_stale_rules` deletes rules left by clusters of processes that no longer exist (a
test run that was SIGKILLed). The rules live in the network namespace, which processes of other
PID namespaces may share (a container on the host's network, a chroot run with a PID namespace
of its own): a pid is judged only in the PID namespace it was taken in, and rules of any other
are left alone.

Why not userspace proxies (:mod:`lessor.testing.proxy`)? A proxy in front of each member's
client and peer ports cuts what is sent *to* the member, but not what the member sends: its
connections to its peers' proxies arrive from 127.0.0.1, like everybody else's, so a peer's
proxy cannot tell which member dialled it, and every member dials every peer. Per-pair proxies
with distinct advertised peer URLs would do, at the price of N·(N-1) proxies and peer URLs that
differ from the members' real ones. The rules above cut exactly one member, on its real
addresses, both ways, and fail closed.

It needs root and ``iptables`` (Debian: ``apt-get install iptables``; the kernel needs the
``owner``, ``connmark`` and ``comment`` matches): :func:`iptables_binary` says which is missing.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "TAG_PREFIX",
    "Firewall",
    "available",
    "identity",
    "iptables_binary",
    "purge_stale_rules",
    "rule_tag",
]

_UID_BASE = 0x40000000  # members' uids: this plus the 24 low bits of their address
_MARK_BASE = 0x4C000000  # conntrack marks, likewise
TAG_PREFIX = "lessor-cluster-"
_TAG = re.compile(rf"{TAG_PREFIX}(\d+)-[0-9a-f]+(?:-ns(\d+))?")  # no ns: before the ns was added


def identity(host: str) -> tuple[int, int]:
    """The uid a member on loopback address ``host`` runs as, and its connections' mark: both
    from the address's 24 low bits, so clusters on distinct addresses never share one."""
    _, a, b, c = (int(x) for x in host.split("."))
    low = (a << 16) | (b << 8) | c
    return _UID_BASE + low, _MARK_BASE + low


def iptables_binary() -> str:
    """The iptables to run; :class:`RuntimeError` saying what is missing (root, iptables)."""
    if os.geteuid() != 0:
        raise RuntimeError("LocalEtcdCluster.isolate needs root and iptables: not running as root")
    found = shutil.which("iptables")
    if found is None:
        raise RuntimeError(
            "LocalEtcdCluster.isolate needs root and iptables: no iptables on PATH "
            "(Debian: apt-get install iptables)"
        )
    return found


def available() -> bool:
    """Root, with iptables on PATH."""
    return os.geteuid() == 0 and shutil.which("iptables") is not None


class Firewall:
    """The OUTPUT rules of one cluster, all carrying the comment ``tag``."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self._cuts: dict[int, list[list[str]]] = {}  # key (member index) -> rule specs

    def mark(self, uid: int, mark: int) -> None:
        """Mark in conntrack every connection ``uid`` sends on, from its first packet (a SYN,
        a SYN-ACK); the mark is what lets :meth:`cut` drop what its peers send back."""
        _run(
            iptables_binary(),
            "-I", "OUTPUT", "1",
            "-m", "comment", "--comment", self.tag,
            "-m", "owner", "--uid-owner", str(uid),
            "-j", "CONNMARK", "--set-mark", f"0x{mark:x}",
        )  # fmt: skip

    def cut(self, key: int, uid: int, mark: int, host: str) -> None:
        """Drop everything ``uid`` sends, everything sent on connections marked ``mark``, and
        every new connection to ``host``; :meth:`heal` of ``key`` undoes it."""
        iptables = iptables_binary()
        comment = ["-m", "comment", "--comment", self.tag]
        rules = [
            [*comment, "-m", "owner", "--uid-owner", str(uid), "-j", "DROP"],
            [*comment, "-m", "connmark", "--mark", f"0x{mark:x}", "-j", "DROP"],
            [*comment, "-d", f"{host}/32", "-j", "DROP"],
        ]
        added = self._cuts.setdefault(key, [])
        for rule in reversed(rules):  # each goes first: the list's order is the chain's
            _run(iptables, "-I", "OUTPUT", "1", *rule)
            added.append(rule)

    @property
    def cut_keys(self) -> list[int]:
        return list(self._cuts)

    def heal(self, key: int) -> None:
        """Delete the rules :meth:`cut` added for ``key``."""
        rules = self._cuts.get(key, [])
        while rules:
            _run(iptables_binary(), "-D", "OUTPUT", *rules[-1])
            rules.pop()
        self._cuts.pop(key, None)

    def delete_all(self) -> None:
        """Delete every rule with this firewall's tag, and check that none is left."""
        self._cuts.clear()
        _delete_rules(lambda tag: tag == self.tag)
        listing = _run(iptables_binary(), "-S", "OUTPUT")
        left = [line for line in listing.splitlines() if self.tag in line]
        if left:
            raise RuntimeError(f"could not delete iptables rules: {left}")


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
    iptables = iptables_binary()
    for line in _run(iptables, "-S", "OUTPUT").splitlines():
        words = shlex.split(line)
        if words[:2] != ["-A", "OUTPUT"]:
            continue
        tags = [w for w in words if _TAG.fullmatch(w)]
        if tags and select(tags[0]):
            # Another process purging the same stale rules may have deleted it already.
            _run(iptables, "-D", "OUTPUT", *words[2:], check=False)


def rule_tag(cluster_id: str) -> str:
    """The comment on every rule of the cluster ``cluster_id`` (``<pid>-<hex>``), naming this
    process's PID namespace too."""
    return f"{TAG_PREFIX}{cluster_id}-ns{_pid_namespace()}"


def purge_stale_rules() -> None:
    """Delete rules left by clusters whose process is gone (a SIGKILLed test run)."""
    if available():
        _delete_rules(lambda tag: stale(tag, _pid_namespace()))


def stale(tag: str, pid_namespace: str) -> bool:
    """Whether the rule tagged ``tag`` was left by a process that is gone: one of PID namespace
    ``pid_namespace`` (ours) whose pid no longer exists. A pid of another PID namespace says
    nothing here (ours may have no such pid while its process runs): never stale."""
    match = _TAG.fullmatch(tag)
    if match is None:
        return False
    pid, namespace = match.groups()
    if namespace is not None and namespace != pid_namespace:
        return False
    return not Path(f"/proc/{pid}").exists()


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:  # no /proc: no pid can be judged stale against it either
        return "unknown"
