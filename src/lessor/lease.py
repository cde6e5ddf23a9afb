"""What a caller holds: a :class:`Lease`, the :class:`LeaseScope` that acquires it on entry and
gives it back on exit (:meth:`Lessor.lease <lessor.contract.Lessor.lease>`), and the fencing
token that rides on the lease's context (:func:`fencing_token`). The contract these keep is
stated once, in :mod:`lessor.contract`.

The steps of a scope that do not depend on how the backend is called — checking the
arguments, refusing a duration the backend cannot grant, making the lease's context, telling
the observers (:mod:`lessor.observe`) and the log — are the functions below
(:func:`lease_request`, :func:`check_grantable`, :func:`acquisition_failed`,
:func:`granted`, :func:`given_back`), called by this scope and by :mod:`lessor.aio`'s alike.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING

from lessor import checks, observe
from lessor.context import Context
from lessor.partition import Partition, SortedPartitions

if TYPE_CHECKING:
    from lessor.contract import Grant, Lessor

__all__ = [
    "Lease",
    "LeaseRequest",
    "LeaseScope",
    "acquisition_failed",
    "check_grantable",
    "fencing_token",
    "given_back",
    "granted",
    "lease_request",
]

log = logging.getLogger("lessor")


class _TokenKey:
    """The private key under which a lease's fencing token rides on its context."""

    def __repr__(self) -> str:
        return "<lessor fencing token>"


_TOKEN_KEY = _TokenKey()


def fencing_token(ctx: Context) -> int | None:
    """The fencing token of the lease whose context ``ctx`` is (or descends from), or None."""
    token = ctx.value(_TOKEN_KEY)
    return token if isinstance(token, int) else None


@dataclass(frozen=True, slots=True)
class Lease:
    """A held lease, as yielded by :meth:`Lessor.lease`.

    Work on :attr:`partitions` only while :attr:`ctx` is not done; pass :attr:`token` to any
    store that fences writes.
    """

    section_id: str
    partitions: SortedPartitions
    ctx: Context
    token: int

    @property
    def deadline(self) -> float:
        """The :func:`time.monotonic` value at which the lease must no longer be relied on."""
        deadline = self.ctx.deadline
        assert deadline is not None  # a lease context always has one
        return deadline


# -- the steps every scope takes, sync or async ------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeaseRequest:
    """The checked arguments of one ``lease(...)`` call: what a scope asks its backend for."""

    ctx: Context
    section_id: str
    part: Partition
    dur: float
    """Seconds."""


def lease_request(
    section_id: str, part: Partition, dur: float | timedelta, ctx: Context | None
) -> LeaseRequest:
    """Check the arguments of a ``lease(section_id, part, dur, ctx=None)`` call (a new
    background context for None)."""
    if ctx is None:
        ctx = Context.background()
    checks.instance(ctx, "ctx", Context, "a lessor.Context or None")
    checks.section_id(section_id)
    checks.partition(part, "part")
    return LeaseRequest(ctx, section_id, part, checks.duration(dur, "dur"))


def check_grantable(backend: str, max_duration: float, request: LeaseRequest) -> None:
    """Refuse, before acquiring, a context that is done and a duration (capped by the
    context's deadline) longer than the backend's ``max_duration``."""
    request.ctx.raise_if_done()
    if min(request.dur, request.ctx.remaining()) > max_duration:
        raise ValueError(
            f"lease duration {request.dur!r}s is longer than the {max_duration:.0f}s the "
            f"{backend!r} lessor can grant (a shorter ctx deadline also caps it)"
        )


def acquisition_failed(
    backend: str, request: LeaseRequest, error: BaseException, start: float
) -> None:
    """Tell the log and the observers that an acquisition begun at ``start`` raised ``error``."""
    log.debug("lease section=%r: acquisition failed: %s", request.section_id, error)
    observe.acquire_failed(backend, request.section_id, error, time.monotonic() - start)


def granted(
    backend: str, request: LeaseRequest, grant: Grant, *, start: float, granted_at: float
) -> Lease:
    """The :class:`Lease` of ``grant`` (asked at ``start``, granted at ``granted_at``): its
    context is a child of the request's with the grant's deadline and fencing token. Tells
    the observers and the log; raises the context's error when acquiring used up the caller's
    time (a lease nobody can use: the caller gives the grant back)."""
    section_id = request.section_id
    observe.acquired(backend, section_id, request.part, grant.partitions, granted_at - start)
    lease_ctx = Context(request.ctx, deadline=grant.deadline, key=_TOKEN_KEY, value=grant.token)
    err = lease_ctx.err
    if err is not None:
        raise err
    if log.isEnabledFor(logging.DEBUG):  # its arguments cost more than the check
        log.debug(
            "lease section=%r token=%d granted %s of %s for %.3fs",
            section_id,
            grant.token,
            grant.partitions.to_strings(),
            request.part,
            lease_ctx.remaining(),
        )
    return Lease(section_id, grant.partitions, lease_ctx, grant.token)


def given_back(
    backend: str, section_id: str, grant: Grant, granted_at: float, error: Exception | None
) -> None:
    """Tell the log and the observers how giving ``grant`` back ended: released, or failed with
    ``error``. A failure is one warning line (the backend's error says what failed and when
    the lease ends anyway), never raised: the caller's own outcome matters more."""
    if error is not None:
        log.warning("lease section=%r token=%d: release failed: %s", section_id, grant.token, error)
        observe.release_failed(backend, section_id, error)
    else:
        log.debug("lease section=%r token=%d released", section_id, grant.token)
        observe.released(backend, section_id, time.monotonic() - granted_at)


class LeaseScope:
    """The context manager :meth:`Lessor.lease` returns; acquires on entry, releases on exit."""

    __slots__ = ("_entered", "_grant", "_granted_at", "_lease", "_lessor", "_request")

    def __init__(self, lessor: Lessor, request: LeaseRequest) -> None:
        self._lessor = lessor
        self._request = request
        self._entered = False
        self._grant: Grant | None = None
        self._lease: Lease | None = None
        self._granted_at = 0.0

    def __enter__(self) -> Lease:
        if self._entered:
            raise RuntimeError("a LeaseScope can be entered only once")
        self._entered = True
        backend, r = self._lessor.backend, self._request
        check_grantable(backend, self._lessor.max_duration, r)
        start = time.monotonic()
        try:
            self._grant = self._lessor._acquire(r.ctx, r.section_id, r.part, r.dur)
        except BaseException as e:
            acquisition_failed(backend, r, e, start)
            raise
        try:
            self._granted_at = time.monotonic()
            self._lease = granted(backend, r, self._grant, start=start, granted_at=self._granted_at)
        except BaseException:
            # Anything that stops the lease from reaching the caller (its time used up, an
            # exception arriving here) gives the grant back: nobody else would.
            self._exit()
            raise
        return self._lease

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit()

    def _exit(self) -> None:
        grant, self._grant = self._grant, None
        if grant is None:
            return
        if self._lease is not None:
            self._lease.ctx.cancel()
        section_id = self._request.section_id
        try:
            self._lessor._release(grant)
        except Exception as e:
            given_back(self._lessor.backend, section_id, grant, self._granted_at, e)
        else:
            given_back(self._lessor.backend, section_id, grant, self._granted_at, None)
