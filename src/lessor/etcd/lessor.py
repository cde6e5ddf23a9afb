"""The ``"etcd"`` lessor: one key of leased ranges per section, compare-and-swap, lease TTLs.

The data model is in ``section.py`` and ``keys.py``: each section is one key whose value lists
its leases (etcd lease id, acquisition number, ranges, holder), and each lease has a marker key
attached to an etcd lease, so that etcd's lease clock decides which entries are live. An
acquisition (``acquisition.py``) computes what is free and writes its entry with one
compare-and-swap Txn (``state.py``); releasing deletes its marker. The process keeps the last
state it saw of each section, and one etcd lease shared by consecutive acquisitions
(``leases.py``), so an uncontended cycle is two etcd writes: the swap and the release. A
process's concurrent acquisitions of one section share one swap (group commit, ``gate.py``).

The fencing token of a lease is the revision of the Txn that wrote it: it grows with every
write in the cluster, so tokens of one section strictly increase in the order leases were
granted, except that leases written by one swap share its revision (their ranges are disjoint,
so per key the order is still strict). An empty lease writes nothing; its token is the revision
it was checked at and is not meant for fencing.
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from tenacity import Retrying, retry_if_exception_type

from lessor.context import Context
from lessor.contract import Grant, Lessor
from lessor.errors import Cancelled, DeadlineExceeded, LessorError
from lessor.etcd.acquisition import RETRYABLE, Acquisition, Backoff, Conflict, Held, Section
from lessor.etcd.gate import Waiter
from lessor.etcd.keys import SectionKeys, validate_prefix
from lessor.etcd.leases import LeasePool
from lessor.etcd.state import SectionTxns
from lessor.etcd.transport import Channels, ClientTransport, TLSConfig, Transport
from lessor.partition import Partition

__all__ = ["EtcdLessor"]

log = logging.getLogger("lessor")

MAX_GROUP = 32
"""The most acquisitions of one section one Txn writes for a process (group commit)."""

MIN_CALL_TIME = 0.05
"""An acquisition with less time left than this is not put in a call to etcd: it would make
the call's timeout too short for the others in the same group."""

MAX_CACHED_SECTIONS = 1024
"""Sections whose state a lessor keeps; past that, the least recently used idle one goes (its
next acquisition reads the section afresh)."""


def _attempt(known: Section, batch: Sequence[Acquisition]) -> BaseException | None:
    """One attempt for ``batch`` (its leader first); the retryable error it failed with, if
    any. A permanent error (corrupt section, permission denied, ...) settles every member."""
    active = []
    for m in batch:
        if m.ctx.done():
            m.settle_failed(DeadlineExceeded(f"{m.what}: the deadline passed while acquiring"))
        elif m.timeout() >= MIN_CALL_TIME:
            active.append(m)
        # else: too little time left to wait for etcd; it stays queued until its deadline,
        # rather than cut everyone's call short
    if not active:
        return None
    try:
        known.attempt(active)
    except (Conflict, *RETRYABLE) as e:
        return e
    except Exception as e:
        for i, m in enumerate(active):
            if not m.settled:  # each thread raises an exception object of its own
                m.settle_failed(e if i == 0 else copy.copy(e))
        if not isinstance(e, LessorError):
            raise
    except BaseException as e:  # KeyboardInterrupt, SystemExit: the leader's alone
        for m in active[1:]:
            if not m.settled:
                m.settle_failed(Cancelled(f"{m.what}: acquisition interrupted ({e!r})"))
        raise
    return None


def _positive(name: str, value: float, zero_ok: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not (value >= 0 if zero_ok else value > 0) or value == float("inf"):
        raise ValueError(
            f"{name} must be {'>= 0' if zero_ok else 'positive'} and finite, got {value!r}"
        )
    return float(value)


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
    ends (a release that fails is logged; the etcd lease's TTL frees the ranges anyway).
    ``margin`` is kept between a lease's deadline and its etcd lease's expiry; ``lease_reuse``
    is explained in :mod:`lessor.etcd.leases`.
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
        lease_reuse: float = 2.0,
    ) -> None:
        self._prefix = validate_prefix(prefix)
        self._rpc_timeout = _positive("rpc_timeout", rpc_timeout)
        self._release_timeout = _positive("release_timeout", release_timeout)
        self._acquire_timeout = _positive("acquire_timeout", acquire_timeout)
        margin = _positive("margin", margin, zero_ok=True)
        lease_reuse = _positive("lease_reuse", lease_reuse, zero_ok=True)
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
        if holder is not None and not isinstance(holder, str):
            raise TypeError(f"holder must be a str, got {holder!r}")
        self._holder = holder if holder is not None else f"{socket.gethostname()}:{os.getpid()}"
        self._pool = LeasePool(self._transport, margin=margin, reuse=lease_reuse)
        self._lock = threading.Lock()
        self._sections: OrderedDict[str, Section] = OrderedDict()
        self._seq = 0

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def endpoint(self) -> str:
        """The etcd endpoint calls currently go to."""
        return self._transport.endpoint

    # -- Lessor ------------------------------------------------------------------------------

    def _acquire(self, ctx: Context, section_id: str, part: Partition, dur: float) -> Grant:
        until = time.monotonic() + dur
        if ctx.deadline is not None:
            until = min(until, ctx.deadline)
        # Retrying past the grant's own deadline would only write a lease nobody can use.
        retry_ctx = ctx.with_deadline(min(until, time.monotonic() + self._acquire_timeout))
        with self._lock:
            self._seq += 1
            known = self._sections.get(section_id)
            if known is None:
                keys = SectionKeys.of(self._prefix, section_id)
                txns = SectionTxns(self._transport, keys)
                known = self._sections[section_id] = Section(txns, self._pool, self._holder)
            else:
                self._sections.move_to_end(section_id)
            acquisition = Acquisition(
                known.txns, self._pool, part=part, until=until, seq=self._seq,
                holder=self._holder, ctx=retry_ctx, caller=ctx, rpc_timeout=self._rpc_timeout,
                endpoints=len(self._transport.endpoints), abandoned=known.abandoned,
            )  # fmt: skip
            waiter = Waiter(acquisition)
            leads = known.gate.join(waiter)  # joined before any eviction can see the section
            self._evict()
        try:
            if leads or self._wait_turn(known, waiter):
                self._lead(known, waiter)
        except BaseException:
            self._give_up(known, waiter)
            raise
        finally:
            retry_ctx.cancel()
        if acquisition.error is not None:
            raise acquisition.error
        assert acquisition.grant is not None
        return acquisition.grant

    def _evict(self) -> None:
        """Forget idle sections past :data:`MAX_CACHED_SECTIONS`, least recently used first.
        A section that is being acquired, or has abandoned acquisitions to clean up, stays."""
        excess = len(self._sections) - MAX_CACHED_SECTIONS
        if excess <= 0:
            return
        idle = itertools.islice(
            (
                section_id
                for section_id, known in self._sections.items()
                if not known.gate.leading and not known.abandoned.current()
            ),
            excess,  # stop at the first few: this runs under the lessor's lock
        )
        for section_id in list(idle):
            del self._sections[section_id]

    @staticmethod
    def _wait_turn(known: Section, waiter: Waiter[Acquisition]) -> bool:
        """Wait until a leader settles ``waiter`` (False) or hands it the lead (True)."""
        acquisition = waiter.item
        while not waiter.event.is_set():
            if acquisition.ctx.done() and known.gate.withdraw(waiter):
                # Still queued, never in an attempt since its last one: give up here.
                acquisition.settle_failed(
                    DeadlineExceeded(
                        f"{acquisition.what}: the deadline passed while this process's other "
                        "acquisitions of the section went first"
                    )
                )
                return False
            # Bounded waits so that a cancellation (which has no event of ours) is noticed too.
            waiter.event.wait(max(0.0, min(acquisition.ctx.remaining(), 0.1)) or 0.01)
        return not waiter.settled

    def _give_up(self, known: Section, waiter: Waiter[Acquisition]) -> None:
        """An exception (KeyboardInterrupt, ...) reached a thread waiting for its turn: leave
        the queue, and hold nothing."""
        acquisition = waiter.item
        if not known.gate.leave(waiter):  # inside an attempt: wait for it, bounded
            waiter.event.wait(self._rpc_timeout + 1.0)
        grant = acquisition.grant
        if grant is not None:
            if grant.handle is not None:
                try:
                    self._release(grant)
                except Exception:
                    log.warning("section=%r: could not give back an interrupted acquisition's "
                                "lease (it expires by itself)", known.txns.keys.section_id,
                                exc_info=True)  # fmt: skip
        elif not acquisition.settled and not waiter.in_attempt:
            acquisition.settle_failed(Cancelled(f"{acquisition.what}: acquisition interrupted"))

    def _lead(self, known: Section, me: Waiter[Acquisition]) -> None:
        """Make attempts for the queue until ``me`` is settled, then hand the lead on."""
        try:
            try:
                self._round(known, me)  # the common case, without tenacity's set-up
            except (Conflict, *RETRYABLE):
                self._retrying(me.item.ctx)(self._round, known, me)
        except BaseException as e:
            if not me.item.settled:
                me.item.settle_failed(e)
            if not isinstance(e, Exception):
                raise  # KeyboardInterrupt, SystemExit: the caller's _give_up cleans up
        finally:
            known.gate.hand_over(me)

    @staticmethod
    def _round(known: Section, me: Waiter[Acquisition]) -> None:
        """One attempt for everyone queued; raises what it failed with if ``me`` is not
        settled, so that tenacity waits and tries again."""
        batch = known.gate.take(MAX_GROUP)
        try:
            failed = _attempt(known, [w.item for w in batch])
        finally:
            known.gate.put_back([w for w in batch if not w.item.settled])
            for w in batch:
                if w.item.settled and w is not me:
                    known.gate.settle(w)
        if not me.item.settled:
            # None: the attempt settled others but not us (too many at once); go again.
            raise failed if failed is not None else Conflict()

    @staticmethod
    def _retrying(retry_ctx: Context) -> Retrying:
        def sleep(seconds: float) -> None:
            retry_ctx.wait(seconds)  # wakes early when the caller cancels

        return Retrying(
            retry=retry_if_exception_type((Conflict, *RETRYABLE)),
            wait=Backoff(retry_ctx),
            stop=lambda state: retry_ctx.done(),
            sleep=sleep,
            reraise=True,
        )

    def _release(self, grant: Grant) -> None:
        held = grant.handle
        if held is None:
            return  # an empty lease wrote nothing
        assert isinstance(held, Held)
        known = self._sections.get(held.txns.keys.section_id)
        if known is not None:  # forget our entry now: our next swap drops it before etcd does
            known.forget(held.lease.id, held.seq)
        try:
            if not (held.lease.retired and held.lease.users == 1):
                held.txns.delete_marker(held.lease.id, held.seq, self._release_timeout)
            # else give_back revokes the etcd lease, and the marker goes with it: one write
        finally:
            self._pool.give_back(held.lease, self._release_timeout)

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Revoke this lessor's idle etcd lease and close its connections."""
        self._pool.close(self._rpc_timeout)
        self._transport.close()

    def __enter__(self) -> EtcdLessor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
