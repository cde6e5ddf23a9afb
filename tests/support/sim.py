"""A discrete-event simulator for the acquisition core: several processes' generators against
one in-memory etcd, each process at a round trip of its own from etcd, on the model's clock.

A call is applied half a round trip after it is sent and answered half a round trip later,
in time order; a pause (``Wait``) lets its time pass; a thread waiting at its section's gate
(``WaitTurn``) looks again soon (every 0.2 ms, or sooner if its wait is shorter); a clean-up
runs as a thread of its own. For tests of fairness and liveness that need processes at
different distances from etcd (``tests/core/test_turn_review2_slow_holder.py``)."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

from lessor.etcd.ops import CleanUp, Op, Steps, Wait, WaitTurn
from tests.support.driver import Proc
from tests.support.etcd_model import EtcdModel, FakeClock

__all__ = ["Sim"]

GATE_POLL = 0.0002


class Sim:
    def __init__(self, clock: FakeClock, etcd: EtcdModel) -> None:
        self.clock, self.etcd = clock, etcd
        self._events: list[tuple[float, int, str, dict[str, Any]]] = []
        self._n = 0

    def start(
        self,
        proc: Proc,
        sid: str,
        steps: Steps,
        rtt: float,
        on_op: Callable[[Op], None] | None = None,
        fault: Callable[[Op], str] | None = None,
    ) -> None:
        """Run ``steps`` as a thread of ``proc`` at ``rtt`` from etcd; ``on_op`` is told of
        every step it takes, ``fault(op)`` says what happens to each of its calls."""
        actor = {"proc": proc, "sid": sid, "steps": steps, "rtt": rtt, "on_op": on_op,
                 "fault": fault, "result": None, "error": None}  # fmt: skip
        self._at(self.clock(), "resume", actor)

    def run(self, until: Callable[[], bool]) -> None:
        """Run events in time order until ``until()`` or none is left."""
        while self._events and not until():
            t, _, kind, actor = heapq.heappop(self._events)
            self.clock.advance(max(0.0, t - self.clock()))
            self.etcd.expire()
            if kind == "apply":
                op, fault = actor["op"], actor["fault"]
                actor["proc"].transport.fault = "ok" if fault is None else fault(op)
                try:
                    actor["result"] = actor["proc"].section(actor["sid"]).perform(op)
                except Exception as e:
                    actor["error"] = e
                self._at(t + actor["rtt"] / 2, "resume", actor)
                continue
            self._resume(actor)

    def _at(self, t: float, kind: str, actor: dict[str, Any]) -> None:
        self._n += 1
        heapq.heappush(self._events, (t, self._n, kind, actor))

    def _resume(self, actor: dict[str, Any]) -> None:
        steps = actor["steps"]
        while True:
            result, error = actor["result"], actor["error"]
            actor["result"] = actor["error"] = None
            try:
                op = steps.send(result) if error is None else steps.throw(error)
            except StopIteration:
                return
            if actor["on_op"] is not None:
                actor["on_op"](op)
            if isinstance(op, CleanUp):
                self.start(actor["proc"], actor["sid"], op.steps, actor["rtt"], None,
                           actor["fault"])  # fmt: skip
                continue
            if isinstance(op, WaitTurn):
                self._at(self.clock() + min(op.seconds, GATE_POLL), "resume", actor)
                return
            if isinstance(op, Wait):
                self._at(self.clock() + op.seconds, "resume", actor)
                return
            actor["op"] = op
            self._at(self.clock() + actor["rtt"] / 2, "apply", actor)
            return
