"""The acquisition model (``test_acquisition_model.py``) with shared etcd leases renewed by every
process, the reaper, and an invariant on renewals.

Added to the model:

* **the reaper**: after every change, each recorded holding whose deadline has passed and that
  neither its release nor the reaper has ended gets a ``core.expire`` actor (as
  ``Reaper``/``EtcdLessor._expire`` do, at most a tick late);
* **no zombie renewed**: every marker in the model etcd (not a tombstone) must be *justified*:
  its holder is before its deadline, or its acquisition is still unsettled (an ambiguous swap),
  or an actor that is removing it (a release, an expire, a clean-up) still runs. From the
  moment a marker stops being justified, its etcd lease must end within one TTL: a renewal
  after that moment keeps a marker alive that should be gone (invariant 2). A clean-up of an
  abandoned acquisition justifies its marker only until its etcd lease's expiry as it stood
  when the clean-up began: renewals for others must not keep it trying (and the marker
  living) longer.

With the reaper switched off, hypothesis finds a counterexample at once (an overrun renewed).
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis.stateful import invariant

from lessor.etcd import core
from lessor.etcd.keys import Owner, SectionKeys
from lessor.etcd.ops import Swap
from lessor.etcd.state import TOMBSTONE
from tests import test_acquisition_model as base
from tests.test_acquisition_model import PREFIX, SECTIONS, Actor


def _target(actor: Actor) -> Owner | None:
    """The owner whose marker a running release / expire / clean-up actor removes."""
    steps = actor.steps
    frame = getattr(steps, "gi_frame", None)
    if frame is None:
        return None
    held = frame.f_locals.get("held")
    if isinstance(held, core.Held):
        return held.owner
    owner = frame.f_locals.get("owner")
    return owner if isinstance(owner, Owner) else None


def _is_clean_up(actor: Actor) -> bool:
    frame = getattr(actor.steps, "gi_frame", None)
    return frame is not None and frame.f_code is core.clean_up.__code__


class RenewalModel(base.AcquisitionModel):
    def __init__(self) -> None:
        super().__init__()
        # Every process shares its etcd leases, so that renewals are frequent.
        self.processes = [
            base.Process(f"p{i}", self.etcd, self.clock, share=True) for i in range(base.PROCESSES)
        ]
        self.reaped: set[int] = set()  # id() of holdings handed to expire
        self.writers: dict[Owner, Actor] = {}  # every owner a swap ever tried to write
        self.unjustified: dict[Owner, float] = {}  # owner -> when its marker lost its reason
        self.why: dict[Owner, str] = {}
        self.clean_up_until: dict[int, float] = {}

    # -- the reaper, and who wrote what --------------------------------------------------------

    def _perform(self, actor: Actor, fault: str) -> None:
        op = actor.op
        if isinstance(op, Swap):
            for e in op.ours:
                self.writers[e.owner] = actor
        super()._perform(actor, fault)

    def _observe(self) -> None:
        super()._observe()
        now = self.clock()
        for h in list(self.holdings):
            if id(h) in self.reaped or h.held.ended.claimed or now < h.deadline:
                continue
            self.reaped.add(id(h))
            section = h.process.sections[h.section_id]
            name = f"reaper {self.names}"
            self.names += 1
            self._spawn(h.process, section, core.expire(h.held, h.process.config), name)

    # -- the invariant -------------------------------------------------------------------------

    def _justified(self, owner: Owner, now: float) -> str | None:
        for h in self.holdings:
            if h.held.owner == owner and not h.released and now < h.deadline:
                return "holder before its deadline"
        writer = self.writers.get(owner)
        if writer is not None and writer.member is not None and not writer.member.settled:
            return "unsettled acquisition"
        for a in self.actors:
            if a.steps is not None and a.member is None and _target(a) == owner:
                if not _is_clean_up(a):
                    return f"being removed by {a.name}"
                # A clean-up tries "while the etcd lease lives": the lease as it was when the
                # acquisition was abandoned, not as later renewals make it.
                lease = self.etcd.leases.get(owner.lease)
                bound = self.clean_up_until.setdefault(
                    id(a), lease.expiry if lease is not None else now
                )
                if now <= bound:
                    return f"being removed by {a.name}"
        return None

    @invariant()
    def no_unjustified_marker_is_renewed(self) -> None:
        now = self.clock()
        seen = set()
        for sid in SECTIONS:
            keys = SectionKeys.of(PREFIX, sid)
            for key, kv in self.etcd.kvs.items():
                owner = keys.owner(key)
                if owner is None or kv.value == TOMBSTONE:
                    continue
                seen.add(owner)
                if self._justified(owner, now) is not None:
                    self.unjustified.pop(owner, None)
                    continue
                since = self.unjustified.setdefault(owner, now)
                lease = self.etcd.leases.get(kv.lease)
                assert lease is not None, "a marker on a lease etcd no longer has"
                assert lease.expiry <= since + lease.ttl + 1e-9, (
                    f"marker {owner} of {sid} has had no reason to live since t={since:.2f} "
                    f"(writer {self.writers.get(owner) and self.writers[owner].name}), yet its "
                    f"etcd lease {kv.lease:x} (TTL {lease.ttl}) was renewed to "
                    f"t={lease.expiry:.2f}; now t={now:.2f}"
                )
        for owner in list(self.unjustified):
            if owner not in seen:
                del self.unjustified[owner]


TestRenewalModel = RenewalModel.TestCase
TestRenewalModel.settings = settings(
    max_examples=base.EXAMPLES,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
