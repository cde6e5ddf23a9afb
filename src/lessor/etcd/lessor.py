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

import logging
import threading

from lessor.context import Context
from lessor.contract import Grant, Lessor
from lessor.etcd import core
from lessor.etcd.base import EtcdLessorBase
from lessor.etcd.calls import run
from lessor.etcd.channels import Channels
from lessor.etcd.client_transport import ClientTransport
from lessor.etcd.keys import SectionKeys
from lessor.etcd.ops import CleanUp
from lessor.etcd.options import Options
from lessor.etcd.reaper import Reaper
from lessor.etcd.shell import CleanUps, SectionShell
from lessor.etcd.transport import Transport
from lessor.partition import Partition

__all__ = ["EtcdLessor"]

log = logging.getLogger("lessor")


class EtcdLessor(EtcdLessorBase[Transport, SectionShell], Lessor):
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

    def _prepare(self) -> None:
        self._reaper = Reaper(self._expire)
        self._clean_ups = CleanUps()

    def _connect(self, options: Options) -> Transport:
        if options.endpoints is None:
            return ClientTransport(options.client)
        return Channels(options.endpoints, tls=options.tls, user=options.user,
                        password=options.password,
                        endpoint_order=options.endpoint_order)  # fmt: skip

    def _new_section(self, section_id: str) -> SectionShell:
        keys = SectionKeys.of(self._prefix, section_id)
        return SectionShell(
            self._transport, keys, self._pool, reaper=self._reaper, clean_ups=self._clean_ups
        )

    # -- Lessor ------------------------------------------------------------------------------

    def _acquire(self, ctx: Context, section_id: str, part: Partition, dur: float) -> Grant:
        self._usage.begin()
        grant: Grant | None = None
        try:
            grant = self._acquire_open(ctx, section_id, part, dur)
            return grant
        finally:
            if grant is None or grant.handle is None:
                self._done_with_one()  # nothing to release: this acquisition is over

    def _acquire_open(self, ctx: Context, section_id: str, part: Partition, dur: float) -> Grant:
        turn = threading.Event()
        waiter = self._waiter(ctx, section_id, part, dur, turn.set)
        try:
            section, leads = self._join(section_id, waiter)
            grant: Grant = section.drive(self._acquisition(section, waiter, leads=leads, turn=turn))
            return grant
        except BaseException:
            # Wherever it arrived: out of the gate, nothing held.
            shell, steps = self._giving_up(section_id, waiter)
            shell.drive(steps)
            raise

    def _release(self, grant: Grant) -> None:
        turn = threading.Event()
        ending = self._ending(grant, turn)
        if ending is None:
            return  # an empty lease wrote nothing
        section, steps = ending
        try:
            section.drive(steps)
        finally:
            self._done_with_one()

    def _done_with_one(self) -> None:
        """An acquisition ended without a grant to release, or a grant was released: the
        lessor shuts down if it was closed and this was the last."""
        if self._usage.end():
            self._shut()

    def _wait_free(self, ctx: Context, section_id: str, part: Partition) -> bool:
        """A read of the section, then a watch on its markers (:mod:`lessor.etcd.watch`)."""
        from lessor.etcd.watch import wait_free  # noqa: PLC0415  (only this method's import)

        self._usage.check_open()
        keys = SectionKeys.of(self._prefix, section_id)
        return wait_free(ctx, self._transport, keys, part, rpc_timeout=self._rpc_timeout)

    def _is_held(self, ctx: Context, section_id: str, part: Partition) -> bool:
        """One read of the section (:func:`lessor.etcd.watch.is_held`)."""
        from lessor.etcd.watch import is_held  # noqa: PLC0415  (only this method's import)

        self._usage.check_open()
        keys = SectionKeys.of(self._prefix, section_id)
        return is_held(ctx, self._transport, keys, part, rpc_timeout=self._rpc_timeout)

    def _expire(self, held: core.Held) -> None:
        """The reaper's: ``held``'s deadline passed before its release; end it apart."""
        section, steps = self._expiry(held)
        section.perform(CleanUp(steps))

    # -- lifecycle ---------------------------------------------------------------------------

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
        if self._usage.close():
            self._shut()
        elif self._usage.in_use:
            log.info("closing an etcd lessor once its %d leases held or being acquired have "
                     "ended", self._usage.in_use)  # fmt: skip

    def _shut(self) -> None:
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
