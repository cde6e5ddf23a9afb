"""What the threaded and the asyncio etcd lessors share: :class:`EtcdLessorBase`.

Both take the same arguments (:class:`~lessor.etcd.options.Options`), keep one lease pool
(``leases.py``), one shell per section (``sections.py``) and one count of what is in use
(``usage.py``), and hand the acquisition core the same steps: :meth:`_join` queues an
acquisition at its section's gate, :meth:`_acquisition` / :meth:`_giving_up` /
:meth:`_ending` / :meth:`_expiry` are the core's steps for it. Each lessor performs those steps
its own way (``lessor.py`` on the calling thread, ``aio_lessor.py`` awaited): that is all the
two add.
"""

from __future__ import annotations

import abc
import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from lessor.context import Context
from lessor.contract import Grant
from lessor.etcd import core
from lessor.etcd.gate import Gate, Waiter
from lessor.etcd.known import Known
from lessor.etcd.leases import LeasePool
from lessor.etcd.ops import Steps
from lessor.etcd.options import Options
from lessor.etcd.sections import Sections
from lessor.etcd.usage import Usage
from lessor.partition import Partition

__all__ = ["EtcdLessorBase"]


class _Turn(Protocol):
    """What a shell's waits are made of: a thread's event, or a task's."""

    def set(self) -> None: ...

    def clear(self) -> None: ...


class _Transport(Protocol):
    rpc: Any

    @property
    def endpoint(self) -> str: ...

    @property
    def endpoints(self) -> list[str]: ...


class _Shell(Protocol):
    known: Known
    gate: Gate[core.Member]

    @property
    def idle(self) -> bool: ...


TransportT = TypeVar("TransportT", bound=_Transport)
ShellT = TypeVar("ShellT", bound=_Shell)


class EtcdLessorBase(abc.ABC, Generic[TransportT, ShellT]):
    """The state and the steps of an etcd lessor; see the module documentation. The
    arguments are documented on :class:`~lessor.etcd.lessor.EtcdLessor`."""

    backend: ClassVar[str] = "etcd"

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
        o = Options.check(
            type(self).__name__,
            endpoints,
            client=client,
            prefix=prefix,
            holder=holder,
            ca_cert=ca_cert,
            cert_cert=cert_cert,
            cert_key=cert_key,
            user=user,
            password=password,
            rpc_timeout=rpc_timeout,
            release_timeout=release_timeout,
            endpoint_order=endpoint_order,
            acquire_timeout=acquire_timeout,
            margin=margin,
            share_leases=share_leases,
            lease_reuse=lease_reuse,
        )
        self._prefix, self._rpc_timeout = o.prefix, o.rpc_timeout
        self._release_timeout, self._acquire_timeout = o.release_timeout, o.acquire_timeout
        self._transport: TransportT = self._connect(o)
        self._pool = LeasePool(self._transport.rpc, margin=o.margin, share=o.share_leases)
        self._config = core.Config(
            holder=o.holder,
            rpc_timeout=o.rpc_timeout,
            release_timeout=o.release_timeout,
            endpoints=len(self._transport.endpoints),
        )
        self._lock = threading.Lock()  # never held across a call to etcd
        self._sections: Sections[ShellT] = Sections(self._new_section, self._lock)
        self._seq = itertools.count(1)  # acquisition numbers (next() is atomic)
        # Acquisitions under way, and grants handed out with a marker and not yet released:
        # closing shuts down when the last of them ends.
        self._usage = Usage(f"the {type(self).__name__} for {o.prefix!r}")
        self._prepare()

    @abc.abstractmethod
    def _prepare(self) -> None:
        """Make what the sections' shells share besides the transport and the pool (called
        once, at the end of ``__init__``)."""

    @abc.abstractmethod
    def _connect(self, options: Options) -> TransportT:
        """The lessor's connection to etcd."""

    @abc.abstractmethod
    def _new_section(self, section_id: str) -> ShellT:
        """A new shell for a section."""

    @property
    def max_duration(self) -> float:
        """The longest lease: its etcd lease, ``dur + margin`` rounded up to whole seconds,
        must not exceed etcd's maximum TTL (:data:`~lessor.etcd.leases.MAX_LEASE_TTL`)."""
        return self._pool.max_duration

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def endpoint(self) -> str:
        """The etcd endpoint calls currently go to."""
        return self._transport.endpoint

    @property
    def transport(self) -> TransportT:
        """The lessor's connection to etcd, for the operator's tools (``admin.py``) to call
        etcd through; it stays the lessor's to close."""
        return self._transport

    @property
    def rpc_timeout(self) -> float:
        """The longest any one call to etcd may take."""
        return self._rpc_timeout

    # -- the core's steps, for the lessor to perform ------------------------------------------

    def _waiter(
        self, ctx: Context, section_id: str, part: Partition, dur: float, wake: Callable[[], object]
    ) -> Waiter[core.Member]:
        """A new acquisition, and how to wake it (``wake``: what sets its turn)."""
        member = core.Member.of(ctx, part, dur, seq=next(self._seq), section_id=section_id,
                                acquire_timeout=self._acquire_timeout)  # fmt: skip
        return Waiter(member, wake)

    def _join(self, section_id: str, waiter: Waiter[core.Member]) -> tuple[ShellT, bool]:
        """Queue ``waiter`` at its section's gate: the section's shell, and whether it leads.
        Joined before any eviction can look at the section, which it then keeps."""
        with self._lock:
            section = self._sections.get(section_id)
            leads = section.gate.join(waiter)
            self._sections.evict()
        return section, leads

    def _acquisition(
        self, section: ShellT, waiter: Waiter[core.Member], *, leads: bool, turn: object
    ) -> Steps:
        """The steps of ``waiter``'s acquisition once it joined (``core.acquire``)."""
        return core.acquire(
            section.known, section.gate, waiter, leads=leads, turn=turn, config=self._config
        )

    def _giving_up(self, section_id: str, waiter: Waiter[core.Member]) -> tuple[ShellT, Steps]:
        """An exception reached ``waiter``'s acquisition, wherever (before it joined, too):
        its section's shell and the steps that leave nothing held (``core.give_up``; they do
        nothing more after the acquisition's own way out, or for a waiter that never
        joined)."""
        with self._lock:
            section = self._sections.get(section_id)  # a joined waiter's is never evicted
        return section, core.give_up(section.known, section.gate, waiter, self._config)

    def _ending(self, grant: Grant, turn: _Turn) -> tuple[ShellT, Steps] | None:
        """The shell and the steps that give ``grant`` back (``core.release``; ``turn`` is
        what the release waits on while it rides the process's next Txn on the section); None
        when it wrote nothing (an empty lease)."""
        held = grant.handle
        if held is None:
            return None
        assert isinstance(held, core.Held)
        with self._lock:
            section = self._sections.get(held.known.keys.section_id)
        boarding = core.Boarding(section.gate, turn, turn.set, turn.clear)
        return section, core.release(held, self._config, boarding)

    def _expiry(self, held: core.Held) -> tuple[ShellT, Steps]:
        """The shell and the steps that end ``held`` at its deadline (``core.expire``)."""
        with self._lock:
            section = self._sections.get(held.known.keys.section_id)
        return section, core.expire(held, self._config)
