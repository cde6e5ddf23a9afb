"""The ``"etcd"`` lessor: one key of leased ranges per section, compare-and-swap, lease TTLs.

The data model is in ``section.py`` and ``keys.py``: each section is one key whose value lists
its leases (etcd lease id, acquisition number, ranges, holder), and each lease has a marker key
attached to an etcd lease, so that etcd's lease clock decides which entries are live. What an
acquisition reads, compares, writes and grants is decided without I/O by the acquisition core
(the ``core`` package, with ``plan.py`` and ``known.py``); the threaded shell (``shell.py``)
performs its operations: one compare-and-swap Txn writes the entry (``state.py``), and
releasing deletes its marker. The process keeps the newest state it saw of each section, and
one etcd lease shared by consecutive acquisitions (``leases.py``), so an uncontended cycle is
two etcd writes: the swap and the release. A process's concurrent acquisitions of one section
share one swap (group commit, ``gate.py``).

The fencing token of a lease is the revision of the Txn that wrote it: it grows with every
write in the cluster, so tokens of one section strictly increase in the order leases were
granted, except that leases written by one swap share its revision (their ranges are disjoint,
so per key the order is still strict). An empty lease writes nothing; its token is the revision
it was checked at and is not meant for fencing.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from lessor import checks
from lessor.context import Context
from lessor.contract import Grant, Lessor
from lessor.errors import LessorError
from lessor.etcd import core
from lessor.etcd.calls import run
from lessor.etcd.channels import Channels, TLSConfig
from lessor.etcd.client_transport import ClientTransport
from lessor.etcd.gate import Waiter
from lessor.etcd.keys import SectionKeys, validate_prefix
from lessor.etcd.leases import LeasePool
from lessor.etcd.ops import CleanUp
from lessor.etcd.reaper import Reaper
from lessor.etcd.shell import CleanUps, SectionShell
from lessor.etcd.state import TOMBSTONE
from lessor.etcd.transport import Transport
from lessor.partition import Partition

__all__ = ["EtcdLessor"]

log = logging.getLogger("lessor")

MAX_CACHED_SECTIONS = 1024
"""Sections whose state a lessor keeps; past that, the least recently used idle one goes (its
next acquisition reads the section afresh)."""


class EtcdLessor(Lessor):
    """Leases ranges through an etcd cluster; see the module documentation.

    Give either ``endpoints`` (``["host:port", ...]``; calls fail over between them) or a
    ``client`` with the python-etcd3 API (``pyetcd`` or ``etcd3``), which stays yours to close.
    TLS (``ca_cert``, ``cert_cert``, ``cert_key``: file paths) and ``user``/``password`` apply
    to ``endpoints``. Calls start on a random endpoint, so that a cluster's clients spread over
    its members, unless ``endpoint_order="given"`` (start on the first, e.g. the member in
    the caller's own datacenter); they move to the next one when an endpoint fails.
    ``prefix`` is where the lessor's keys live; ``holder`` labels its leases.

    ``rpc_timeout`` bounds each call to etcd, ``acquire_timeout`` a whole acquisition when the
    caller's context sets no earlier deadline, ``release_timeout`` the give-back when a lease
    ends, tried on one endpoint after another (a release that fails is logged; the etcd
    lease's TTL frees the ranges anyway). ``margin`` is kept between a lease's deadline and its
    etcd lease's expiry. Consecutive acquisitions share an etcd lease, renewed as they need it
    (:mod:`lessor.etcd.leases`); ``share_leases=False`` grants each its own, revoked when it is
    released (one more etcd write per cycle). ``lease_reuse`` is deprecated: leases are no
    longer granted with slack for reuse; ``lease_reuse=0`` still means ``share_leases=False``.

    **Recovery.** A holder's ranges come free when it releases them; at its deadline if its
    callback overruns (the lessor deletes its marker then, while the callback runs on); and
    ``ceil(dur + margin)`` seconds after the etcd lease's last grant or renewal if its process
    dies (etcd's minimum TTL, 2 s with default settings, may be more). A change of etcd leader
    restarts every lease's countdown in full, so there add the time to elect a leader.
    """

    backend = "etcd"

    def __init__(
        self,
        endpoints: Sequence[str] | None = None,
        *,
        client: Any = None,
        prefix: str = "/lessor/",
        holder: str | None = None,
        ca_cert: str | None = None,
        cert_cert: str | None = None,
        cert_key: str | None = None,
        user: str | None = None,
        password: str | None = None,
        rpc_timeout: float = 1.0,
        release_timeout: float = 1.0,
        endpoint_order: str = "random",
        acquire_timeout: float = 30.0,
        margin: float = 0.2,
        share_leases: bool = True,
        lease_reuse: float | None = None,
    ) -> None:
        self._prefix = validate_prefix(prefix)
        self._rpc_timeout = checks.duration(rpc_timeout, "rpc_timeout")
        self._release_timeout = checks.duration(release_timeout, "release_timeout")
        self._acquire_timeout = checks.duration(acquire_timeout, "acquire_timeout")
        margin = checks.duration(margin, "margin", zero=True)
        checks.flag(share_leases, "share_leases")
        if lease_reuse is not None:
            lease_reuse = checks.duration(lease_reuse, "lease_reuse", zero=True)
            warnings.warn(
                "EtcdLessor(lease_reuse=...) is deprecated: etcd leases are shared by renewal, "
                "with no slack; pass share_leases=False for one lease per acquisition",
                DeprecationWarning,
                stacklevel=2,
            )
            share_leases = share_leases and lease_reuse > 0
        self._transport: Transport
        if client is not None:
            if endpoints is not None:
                raise ValueError("give endpoints or client, not both")
            if any(v is not None for v in (ca_cert, cert_cert, cert_key, user, password)):
                raise ValueError("TLS and auth options apply to endpoints; configure the client")
            self._transport = ClientTransport(client)
        elif endpoints is not None:
            tls = None
            if any(v is not None for v in (ca_cert, cert_cert, cert_key)):
                tls = TLSConfig(ca_cert, cert_cert, cert_key)
            self._transport = Channels(endpoints, tls=tls, user=user, password=password,
                                       endpoint_order=endpoint_order)  # fmt: skip
        else:
            raise ValueError("EtcdLessor needs endpoints (['host:port', ...]) or a client")
        if holder is not None:
            checks.instance(holder, "holder", str, "a str or None")
        if holder is not None and holder.encode("utf-8", "replace") == TOMBSTONE:
            raise ValueError(f"holder must not be {holder!r}: that marks abandoned acquisitions")
        self._holder = holder if holder is not None else f"{socket.gethostname()}:{os.getpid()}"
        self._pool = LeasePool(self._transport.rpc, margin=margin, share=share_leases)
        self._config = core.Config(
            holder=self._holder,
            rpc_timeout=self._rpc_timeout,
            release_timeout=self._release_timeout,
            endpoints=len(self._transport.endpoints),
        )
        self._lock = threading.Lock()
        self._sections: OrderedDict[str, SectionShell] = OrderedDict()
        self._seq = 0
        self._reaper = Reaper(self._expire)
        self._clean_ups = CleanUps()
        self._closed = False
        self._shut_down = False
        # Acquisitions under way, and grants handed out with a marker and not yet released:
        # close() shuts down when the last of them ends.
        self._in_use = 0

    @property
    def max_duration(self) -> float:
        """The longest lease: its etcd lease, ``dur + margin`` rounded up to whole seconds,
        must not exceed etcd's maximum TTL (:data:`MAX_LEASE_TTL`)."""
        return self._pool.max_duration

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def endpoint(self) -> str:
        """The etcd endpoint calls currently go to."""
        return self._transport.endpoint

    @property
    def transport(self) -> Transport:
        """The lessor's connection to etcd, for the operator's tools (``admin.py``) to call
        etcd through; it stays the lessor's to close."""
        return self._transport

    @property
    def rpc_timeout(self) -> float:
        """The longest any one call to etcd may take."""
        return self._rpc_timeout

    # -- Lessor ------------------------------------------------------------------------------

    def _acquire(self, ctx: Context, section_id: str, part: Partition, dur: float) -> Grant:
        with self._lock:
            # Under the lock that close() takes: it either refuses this acquisition, or sees
            # it under way and shuts down only once it has ended (or its grant is released).
            self._check_open()
            self._in_use += 1
        grant: Grant | None = None
        try:
            grant = self._acquire_open(ctx, section_id, part, dur)
            return grant
        finally:
            if grant is None or grant.handle is None:
                self._done_with_one()  # nothing to release: this acquisition is over

    def _acquire_open(self, ctx: Context, section_id: str, part: Partition, dur: float) -> Grant:
        turn = threading.Event()
        waiter: Waiter[core.Member] | None = None
        try:
            with self._lock:
                self._seq += 1
                section = self._section(section_id)
                member = core.Member.of(ctx, part, dur, seq=self._seq, section_id=section_id,
                                        acquire_timeout=self._acquire_timeout)  # fmt: skip
                waiter = Waiter(member, turn.set)
                leads = section.gate.join(waiter)  # joined before any eviction sees the section
                self._evict()
            grant: Grant = section.drive(
                core.acquire(
                    section.known, section.gate, waiter, leads=leads, turn=turn, config=self._config
                )
            )
            return grant
        except BaseException:
            # Wherever it arrived, once the waiter exists: out of the gate, nothing held.
            if waiter is not None:
                section.drive(core.give_up(section.known, section.gate, waiter, self._config))
            raise

    def _section(self, section_id: str) -> SectionShell:
        """The section's state, made if need be (under the lessor's lock)."""
        section = self._sections.get(section_id)
        if section is None:
            keys = SectionKeys.of(self._prefix, section_id)
            section = self._sections[section_id] = SectionShell(
                self._transport, keys, self._pool, reaper=self._reaper, clean_ups=self._clean_ups
            )
        else:
            self._sections.move_to_end(section_id)
        return section

    def _evict(self) -> None:
        """Forget idle sections past :data:`MAX_CACHED_SECTIONS`, least recently used first.
        A section that is being acquired, or has abandoned acquisitions to clean up, stays."""
        excess = len(self._sections) - MAX_CACHED_SECTIONS
        if excess <= 0:
            return
        idle = itertools.islice(
            (section_id for section_id, section in self._sections.items() if section.idle),
            excess,  # stop at the first few: this runs under the lessor's lock
        )
        for section_id in list(idle):
            del self._sections[section_id]

    def _release(self, grant: Grant) -> None:
        held = grant.handle
        if held is None:
            return  # an empty lease wrote nothing
        assert isinstance(held, core.Held)
        with self._lock:
            section = self._section(held.known.keys.section_id)
        try:
            section.drive(core.release(held, self._config))
        finally:
            self._done_with_one()

    def _done_with_one(self) -> None:
        """An acquisition ended without a grant to release, or a grant was released: the
        lessor shuts down if it was closed and this was the last."""
        with self._lock:
            self._in_use -= 1
            last = self._closed and self._in_use == 0
        if last:
            self._shut()

    def _wait_free(self, ctx: Context, section_id: str, part: Partition) -> bool:
        """A read of the section, then a watch on its markers (:mod:`lessor.etcd.watch`)."""
        from lessor.etcd.watch import wait_free  # noqa: PLC0415  (only this method's import)

        self._check_open()
        keys = SectionKeys.of(self._prefix, section_id)
        return wait_free(ctx, self._transport, keys, part, rpc_timeout=self._rpc_timeout)

    def _is_held(self, ctx: Context, section_id: str, part: Partition) -> bool:
        """One read of the section (:func:`lessor.etcd.watch.is_held`)."""
        from lessor.etcd.watch import is_held  # noqa: PLC0415  (only this method's import)

        self._check_open()
        keys = SectionKeys.of(self._prefix, section_id)
        return is_held(ctx, self._transport, keys, part, rpc_timeout=self._rpc_timeout)

    def _expire(self, held: core.Held) -> None:
        """The reaper's: ``held``'s deadline passed before its release; end it apart."""
        with self._lock:
            section = self._section(held.known.keys.section_id)
        section.perform(CleanUp(core.expire(held, self._config)))

    # -- lifecycle ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise LessorError(f"the etcd lessor for {self._prefix!r} is closed")

    def close(self) -> None:
        """Refuse new acquisitions (and ``wait_free``). Leases still held stay valid: they end
        at their release, or at their deadlines if they overrun, as before, and so do
        acquisitions already under way (their grants are leases like any other); the lessor
        shuts down when the last of them has ended (at once when there is none): it waits up
        to twice ``release_timeout`` for clean-ups under way, revokes its idle etcd lease and
        closes its connections. A lease whose holder never releases it keeps the connections
        open, and so may an exception delivered into this bookkeeping itself (a
        KeyboardInterrupt between counting an acquisition and its ``try``): leases still end
        as ever, by release, deadline or etcd lease, but the lessor then stays open."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            in_use = self._in_use
        if in_use:
            log.info("closing an etcd lessor once its %d leases held or being acquired have "
                     "ended", in_use)  # fmt: skip
            return
        self._shut()

    def _shut(self) -> None:
        with self._lock:
            if self._shut_down:
                return
            self._shut_down = True
        self._reaper.close()
        # A clean-up's bound: its deletion's tries (release_timeout), then giving back its
        # etcd lease (one more call of at most release_timeout).
        if not self._clean_ups.join(2 * self._release_timeout):
            log.info("closing an etcd lessor before its clean-ups ended (what they were "
                     "clearing ends with its etcd lease)")  # fmt: skip
        run(self._transport, self._pool.close(self._rpc_timeout))
        self._transport.close()

    def __enter__(self) -> EtcdLessor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
