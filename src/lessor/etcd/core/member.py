"""The core's values: one acquisition, a grant's handle, and what the core knows of its lessor.

:class:`Member` (one acquisition, carried from attempt to attempt), :class:`Held` (what ending
a grant needs), :class:`Once` (which of a grant's two ends deletes its marker), :class:`Config`
and :class:`Conflict` (a lost compare-and-swap). Each states its contract where it is defined.
Nothing here yields an operation: the mechanisms that do are the sibling modules.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lessor.context import Context
from lessor.contract import Grant
from lessor.errors import Cancelled, DeadlineExceeded, Unavailable
from lessor.etcd.keys import Owner
from lessor.etcd.known import Known
from lessor.etcd.leases import EtcdLease
from lessor.etcd.retry import RETRYABLE, Backoff, call_timeout, retry_deadline
from lessor.etcd.transport import RetryableRpc
from lessor.partition import Partition

__all__ = [
    "Config",
    "Conflict",
    "Held",
    "Member",
    "Once",
]


class Conflict(Exception):
    """The compare-and-swap lost to another writer, or to a marker that expired."""


@dataclass(frozen=True, slots=True)
class Config:
    """What the core needs to know of its lessor."""

    holder: str  # the label written with every entry
    rpc_timeout: float  # the longest any one call may take
    release_timeout: float  # the longest a release's call may take
    endpoints: int = 1  # how many etcd endpoints calls can fail over between
    clock: Callable[[], float] = field(default=time.monotonic)


class Once:
    """A claim only its first caller wins: the release and the deadline (``release.py``)
    race to end a holder's marker, and exactly one of them deletes it. :attr:`claimed` says
    whether it was won (a plain attribute: read on every grant's hot path)."""

    __slots__ = ("claimed",)

    _lock = threading.Lock()  # one for every claim: held for two assignments, never contended
    # for long, and a lock per grant would cost an allocation on the hot path

    def __init__(self) -> None:
        self.claimed = False

    def claim(self) -> bool:
        with Once._lock:
            first, self.claimed = not self.claimed, True
            return first


@dataclass(frozen=True, slots=True)
class Held:
    """A grant's handle: what releasing it, or ending it at its deadline, needs."""

    known: Known
    lease: EtcdLease
    seq: int
    until: float  # the grant's deadline: its marker is deleted then if it is still there
    ended: Once = field(default_factory=Once, compare=False, repr=False)
    tracked: Once = field(default_factory=Once, compare=False, repr=False)  # by the reaper

    @property
    def owner(self) -> Owner:
        return Owner(self.lease.id, self.seq)


class Member:
    """One acquisition: what it asks for, and what it carries from attempt to attempt.

    It is *settled* when it has a :attr:`grant` or an :attr:`error`; only the gate's leader
    (or, once out of the gate, its own thread) changes it.
    """

    def __init__(
        self,
        *,
        part: Partition,
        until: float,
        deadline: float,
        seq: int,
        started: float,
        ctx: Context,
        what: str,
        backoff: Backoff | None = None,
    ) -> None:
        self.part = part
        self.until = until  # the grant's deadline
        self.deadline = deadline  # no call for it after this (at most ``until``)
        self.seq = seq
        self.started = started
        self.ctx = ctx  # the caller's: its cancellation ends the acquisition
        self.what = what
        self.lease: EtcdLease | None = None
        self.ambiguous = False  # a swap may have committed without our hearing of it
        # The section's mod revision that the last swap whose reply was lost compared against:
        # that swap can still commit while the section stays there.
        self.lost_at: int | None = None
        self.conflicts = 0
        self.last_failure: BaseException | None = None
        self.backoff = backoff if backoff is not None else Backoff()
        self.grant: Grant | None = None
        self.error: BaseException | None = None

    @classmethod
    def of(
        cls,
        ctx: Context,
        part: Partition,
        dur: float,
        *,
        seq: int,
        acquire_timeout: float,
        section_id: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> Member:
        """A caller's acquisition of ``part`` for ``dur`` seconds, starting now: its grant
        ends by ``ctx``'s deadline, and no call is made for it after ``acquire_timeout``
        (``retry.retry_deadline``)."""
        now = clock()
        until = now + dur
        if ctx.deadline is not None:
            until = min(until, ctx.deadline)
        return cls(
            part=part,
            until=until,
            deadline=retry_deadline(until, now, acquire_timeout),
            seq=seq,
            started=now,
            ctx=ctx,
            what=f"section {section_id!r}",
        )

    @property
    def settled(self) -> bool:
        return self.grant is not None or self.error is not None

    def done(self, now: float) -> bool:
        """Its time is up, or its caller cancelled."""
        return now >= self.deadline or self.ctx.err is not None

    def timeout(self, now: float, config: Config) -> float:
        """How long a call made for it may take (0 when its time is up)."""
        remaining = 0.0 if self.ctx.err is not None else max(0.0, self.deadline - now)
        return call_timeout(remaining, config.rpc_timeout, config.endpoints)

    def failure(self, error: BaseException) -> BaseException:
        """What to raise when no attempt succeeded, given the last error."""
        if isinstance(self.ctx.err, Cancelled):
            return Cancelled(f"{self.what}: cancelled while acquiring a lease")
        if not isinstance(error, (Conflict, *RETRYABLE, DeadlineExceeded)):
            return error  # permanent: corrupt section, permission denied, ...
        if isinstance(self.last_failure, RetryableRpc):
            return Unavailable(
                f"{self.what}: etcd did not answer before the deadline: {self.last_failure}"
            )
        if self.conflicts:
            return DeadlineExceeded(
                f"{self.what}: no lease before the deadline; {self.conflicts} compare-and-swap "
                "attempts lost to other writers"
            )
        if isinstance(error, DeadlineExceeded):
            return error  # it says where the time went
        return DeadlineExceeded(f"{self.what}: the deadline passed while acquiring a lease")
