"""A small deterministic driver for the acquisition core on the in-memory etcd model: one
process's sections and lease pool, one generator at a time, a fault chosen per operation,
clean-ups collected to run later. For tests that set up one schedule by hand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lessor import Context, Partition
from lessor.etcd import core
from lessor.etcd import section as codec
from lessor.etcd.gate import Waiter
from lessor.etcd.keys import SectionKeys
from lessor.etcd.leases import LeasePool
from lessor.etcd.ops import CleanUp, Op, Read, Steps, Swap, Wait
from lessor.etcd.shell import SectionShell
from tests.support.etcd_model import EtcdModel, FakeClock, ModelTransport

PREFIX = "/driven/"


class Interrupt(BaseException):
    """Stands for what reaches a thread from outside: a KeyboardInterrupt, or an asyncio
    task's cancellation (thrown into the core's steps, as the shells do)."""


class Proc:
    def __init__(self, name: str, etcd: EtcdModel, clock: FakeClock, share: bool = True) -> None:
        self.name, self.etcd, self.clock = name, etcd, clock
        self.transport = ModelTransport(etcd)
        self.pool = LeasePool(self.transport.rpc, margin=0.2, share=share, clock=clock)
        self.config = core.Config(holder=name, rpc_timeout=1.0, release_timeout=1.0, clock=clock)
        self.sections: dict[str, SectionShell] = {}
        self.seq = 0
        self.cleanups: list[Steps] = []

    def section(self, sid: str) -> SectionShell:
        if sid not in self.sections:
            self.sections[sid] = SectionShell(
                self.transport, SectionKeys.of(PREFIX, sid), self.pool
            )
        return self.sections[sid]

    def member(self, part: Partition, dur: float, ctx: Context | None = None) -> core.Member:
        self.seq += 1
        now = self.clock()
        return core.Member(
            part=part,
            until=now + dur,
            deadline=now + dur,
            seq=self.seq,
            started=now,
            ctx=ctx or Context.background(),
            what=f"{self.name}#{self.seq}",
        )

    def run(
        self,
        sid: str,
        steps: Steps,
        fault: Callable[[Op], str] = lambda op: "ok",
        on_op: Callable[[Op], None] = lambda op: None,
        throw: Callable[[Op], BaseException | None] = lambda op: None,
    ) -> Any:
        """Drive ``steps`` to its end; ``fault(op)`` says what happens to each call, and
        ``throw(op)``, asked once a call is made or a pause has passed, what exception
        reaches the thread instead of its outcome (an interrupt, a cancel), if any."""
        section = self.section(sid)
        result: Any = None
        error: BaseException | None = None
        while True:
            try:
                op = steps.send(result) if error is None else steps.throw(error)
            except StopIteration as end:
                return end.value
            result, error = None, None
            on_op(op)
            if isinstance(op, CleanUp):
                self.cleanups.append(op.steps)
                continue
            if isinstance(op, Wait):
                self.clock.advance(op.seconds)
                self.etcd.expire()
            else:
                self.transport.fault = fault(op)
                try:
                    result = section.perform(op)
                except Exception as e:
                    error = e
            if (interrupt := throw(op)) is not None:
                result, error = None, interrupt

    def lead(
        self, sid: str, part: Partition, dur: float, ctx: Context | None = None
    ) -> tuple[core.Member, Waiter[core.Member], Steps]:
        """A new acquisition that leads at once (nothing else of this process acquires the
        section), and its lead's steps, not yet run."""
        m = self.member(part, dur, ctx)
        section = self.section(sid)
        w = Waiter(m, lambda: None)
        assert section.gate.join(w)
        return m, w, core.lead(section.known, section.gate, w, self.config)

    def acquire(self, sid: str, part: Partition, dur: float, **kw: Any) -> core.Member:
        m, _, steps = self.lead(sid, part, dur, kw.pop("ctx", None))
        self.run(sid, steps, **kw)
        return m

    def give_up(self, sid: str, waiter: Waiter[core.Member]) -> None:
        """An exception reached ``waiter``'s thread: its way out, then every clean-up."""
        section = self.section(sid)
        self.run(sid, core.give_up(section.known, section.gate, waiter, self.config))
        self.finish_cleanups(sid)

    def finish_cleanups(self, sid: str) -> None:
        """Run every clean-up collected so far, and those they leave, to their end."""
        while self.cleanups:
            self.run(sid, self.cleanups.pop(0))


def claim_and_stop(h: Proc, q: Proc, sid: str, round_trip: float, q_keys: int = 10) -> Steps:
    """``h`` acquires keys 0-4 of ``sid`` until it holds the section's turn (``q`` writes a key
    of its own, from ``q_keys`` on, before each of ``h``'s swaps, so they lose; each of ``h``'s
    calls takes ``round_trip``), then is driven no more, as if it had crashed: its claim
    stands. Returns ``h``'s lead, unfinished."""
    section = h.section(sid)
    _, _, steps = h.lead(sid, Partition(0, 4), 10.0)
    swaps = 0
    result: Any = None
    error: BaseException | None = None
    while not section.known.turns.holding:
        op = steps.send(result) if error is None else steps.throw(error)
        result, error = None, None
        if isinstance(op, Swap | Read):
            h.clock.advance(round_trip)
        if isinstance(op, Swap):
            swaps += 1
            q.acquire(sid, Partition(q_keys + swaps, q_keys + swaps + 1), 30.0)  # q first
        try:
            result = section.perform(op)
        except Exception as e:
            error = e
    assert section.known.keys.turn in h.etcd.kvs
    return steps


def two_processes() -> tuple[FakeClock, EtcdModel, Proc, Proc]:
    """A clock, an etcd on it, and two processes ``p`` and ``q`` of it."""
    clock = FakeClock()
    etcd = EtcdModel(clock)
    return clock, etcd, Proc("p", etcd, clock), Proc("q", etcd, clock)


def live_entries(etcd: EtcdModel, sid: str) -> list[Any]:
    keys = SectionKeys.of(PREFIX, sid)
    raw = etcd.kvs.get(keys.value)
    if raw is None:
        return []
    return [e for e in codec.decode(sid, raw.value) if keys.marker(e.lease, e.seq) in etcd.kvs]
