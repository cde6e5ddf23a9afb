"""Releases ride (from an adversarial review, kept as a regression test): the acquisition model
(tests/test_acquisition_model.py) with its releases riding the gate.

On hot-fold the model still calls ``core.release`` without a
:class:`~lessor.etcd.core.Boarding`, so no release ever rides there. Here a release rides
(most of the time), and the model's shell plays its wait: ``WaitTurn`` returns at once when
its turn was set, else the thread sleeps its whole wait (time passes, as for ``Wait``). An
interrupt may also reach a release's thread at its ``WaitTurn`` or ``DeleteMarkers``.

Checked besides the model's own invariants, after every step:

* a ride never waits with its turn still set by a wake-up an earlier wait returned for (a
  thread's event stays set after a wake: such a wait returns at once, a busy loop on a real
  thread);
* while rides are aboard and no acquisition leads, a release leads them and its thread is
  still there.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule

from lessor.etcd import core
from lessor.etcd.ops import DeleteMarkers, WaitTurn
from tests import test_acquisition_model as model
from tests.test_acquisition_model import AcquisitionModel, Actor, Interrupt


class Turn:
    """What a riding release waits on, played by the model: set by the gate's wake."""

    def __init__(self, model: AcquisitionModel) -> None:
        self.model = model
        self.is_set = False
        self.sets = 0  # wake-ups so far
        self.seen = 0  # the wake-ups a wait has returned for
        self.idle_waits = 0  # waits in a row that returned for a wake-up one returned for before

    def set(self) -> None:
        self.is_set = True
        self.sets += 1

    def clear(self) -> None:
        self.is_set = False

    def wait(self, seconds: float) -> None:
        if self.is_set:
            # A wake-up that came while the thread was on its way to the wait is a wake-up
            # like any; one that an earlier wait already returned for, and nobody cleared,
            # ends every wait at once: a real thread would spin.
            self.idle_waits = self.idle_waits + 1 if self.sets == self.seen else 0
            self.seen = self.sets
            return
        self.idle_waits = 0
        self.model.clock.advance(seconds)  # nobody woke it: it sleeps its whole wait
        self.model.etcd.expire()


class RidingModel(AcquisitionModel):
    def __init__(self) -> None:
        super().__init__()
        # Two of three processes share their etcd leases: an unshared lease is retired, and
        # its release revokes it instead of riding (``by_revoke``).
        self.processes = [
            model.Process(f"p{i}", self.etcd, self.clock, share=i < 2)
            for i in range(model.PROCESSES)
        ]
        self.turns: dict[Actor, Turn] = {}

    @rule(data=st.data(), ride=st.sampled_from((True, True, True, False)))
    def release(self, data: st.DataObject, ride: bool) -> None:  # type: ignore[override]
        now = self.clock()
        held = [h for h in self.holdings if not h.released and now < h.deadline + 1]
        if not held:
            return
        holding = data.draw(st.sampled_from(held), label="holding")
        holding.released = True
        section = holding.process.sections[holding.section_id]
        actor = Actor(f"release {self.names}", holding.process, section, released=holding)
        self.names += 1
        boarding = None
        if ride:
            turn = Turn(self)
            self.turns[actor] = turn
            boarding = core.Boarding(section.gate, turn, turn.set, turn.clear)
        actor.steps = core.release(holding.held, holding.process.config, boarding)
        self.actors.append(actor)
        self._resume(actor, None, None)

    @rule(data=st.data(), ride=st.booleans())
    def release_more(self, data: st.DataObject, ride: bool) -> None:
        """Releases twice as often as the model's other rules: rides need company."""
        self.release(data, ride)

    @rule(data=st.data(), count=st.integers(1, 8))
    def step_more(self, data: st.DataObject, count: int) -> None:
        """Threads run more often too, so that acquisitions are granted and swaps sent."""
        self.step(data, count)

    @rule(data=st.data(), now=st.sampled_from((True, False, False)))
    def interrupt_ride(self, data: st.DataObject, now: bool) -> None:
        riding = [a for a in self.turns if a.steps is not None
                  and isinstance(a.op, WaitTurn | DeleteMarkers)]  # fmt: skip
        if not riding or not now:
            return
        actor = data.draw(st.sampled_from(riding), label="interrupted ride")
        try:
            self._resume(actor, None, Interrupt())
            while actor.steps is not None:  # what the core does on its way out
                self._perform(actor, "ok")
        except Interrupt:
            pass
        self._observe()

    @invariant()
    def rides_do_not_spin(self) -> None:
        for actor, turn in self.turns.items():
            assert turn.idle_waits == 0, (
                f"{actor.name} waits again and again with its turn already set (busy loop)"
            )

    @invariant()
    def rides_aboard_have_a_leader(self) -> None:
        for p in self.processes:
            for sid, section in p.sections.items():
                gate = section.gate
                leading = gate._releasing
                if leading is None:
                    assert not gate._aboard or gate.leading, (
                        f"{p.name} {sid}: rides aboard, nobody leads them"
                    )
                    continue
                owners = [a for a in self.turns if a.released is not None
                          and a.released.held.owner == leading.owner]  # fmt: skip
                assert owners and owners[0].steps is not None, (
                    f"{p.name} {sid}: the ride leading the releases has no thread: "
                    f"{[a.name for a in owners]}"
                )


TestRidingModel = RidingModel.TestCase
TestRidingModel.settings = settings(model.TestAcquisitionModel.settings, stateful_step_count=120)
