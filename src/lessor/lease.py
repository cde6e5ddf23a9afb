"""What a caller holds: a :class:`Lease`, the :class:`LeaseScope` that acquires it on entry and
gives it back on exit (:meth:`Lessor.lease <lessor.contract.Lessor.lease>`), and the fencing
token that rides on the lease's context (:func:`fencing_token`). The contract these keep is
stated once, in :mod:`lessor.contract`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from lessor import observe
from lessor.context import Context
from lessor.partition import Partition, SortedPartitions

if TYPE_CHECKING:
    from lessor.contract import Grant, Lessor

__all__ = ["Lease", "LeaseScope", "fencing_token"]

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


class LeaseScope:
    """The context manager :meth:`Lessor.lease` returns; acquires on entry, releases on exit."""

    __slots__ = (
        "_ctx",
        "_dur",
        "_entered",
        "_grant",
        "_granted_at",
        "_lease",
        "_lessor",
        "_part",
        "_section_id",
    )

    def __init__(
        self, lessor: Lessor, ctx: Context, section_id: str, part: Partition, dur: float
    ) -> None:
        self._lessor = lessor
        self._ctx = ctx
        self._section_id = section_id
        self._part = part
        self._dur = dur
        self._entered = False
        self._grant: Grant | None = None
        self._lease: Lease | None = None
        self._granted_at = 0.0

    def __enter__(self) -> Lease:
        if self._entered:
            raise RuntimeError("a LeaseScope can be entered only once")
        self._entered = True
        self._ctx.raise_if_done()
        longest = self._lessor.max_duration
        if min(self._dur, self._ctx.remaining()) > longest:
            raise ValueError(
                f"lease duration {self._dur!r}s is longer than the {longest:.0f}s the "
                f"{self._lessor.backend!r} lessor can grant (a shorter ctx deadline also caps it)"
            )
        backend = self._lessor.backend
        start = time.monotonic()
        try:
            self._grant = self._lessor._acquire(self._ctx, self._section_id, self._part, self._dur)
        except BaseException as e:
            log.debug("lease section=%r: acquisition failed: %s", self._section_id, e)
            observe.acquire_failed(backend, self._section_id, e, time.monotonic() - start)
            raise
        try:
            return self._enter(start)
        except BaseException:
            # Anything that stops the lease from reaching the caller (its time used up, an
            # exception arriving here) gives the grant back: nobody else would.
            self._exit()
            raise

    def _enter(self, start: float) -> Lease:
        grant = self._grant
        assert grant is not None
        self._granted_at = time.monotonic()
        observe.acquired(
            self._lessor.backend,
            self._section_id,
            self._part,
            grant.partitions,
            self._granted_at - start,
        )
        lease_ctx = Context(self._ctx, deadline=grant.deadline, key=_TOKEN_KEY, value=grant.token)
        err = lease_ctx.err
        if err is not None:
            raise err  # acquisition used up the caller's time: a lease nobody can use
        self._lease = Lease(self._section_id, grant.partitions, lease_ctx, grant.token)
        if log.isEnabledFor(logging.DEBUG):  # its arguments cost more than the check
            log.debug(
                "lease section=%r token=%d granted %s of %s for %.3fs",
                self._section_id,
                grant.token,
                grant.partitions.to_strings(),
                self._part,
                lease_ctx.remaining(),
            )
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
        backend = self._lessor.backend
        try:
            self._lessor._release(grant)
        except Exception as e:
            # The lease ends at its expiry anyway; the caller's own outcome matters more.
            # One line: the backend's error says what failed and when the lease ends anyway.
            log.warning(
                "lease section=%r token=%d: release failed: %s", self._section_id, grant.token, e
            )
            observe.release_failed(backend, self._section_id, e)
        else:
            log.debug("lease section=%r token=%d released", self._section_id, grant.token)
            observe.released(backend, self._section_id, time.monotonic() - self._granted_at)
