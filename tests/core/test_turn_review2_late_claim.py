"""Turn review 2: a claiming swap that etcd applies late leaves a claim nobody will drop;
what that costs the others is bounded by their patience.

Found by ``tests/test_acquisition_model.py --hypothesis-seed=21`` (``LESSOR_MODEL_EXAMPLES=600``),
which hangs in its teardown: after every acquisition ended, the turn key of section s0 still
holds p1's claim, on an etcd lease that is alive (idle in p1's pool, not retired, ~3.9 s
left); p1's ``Turns`` has ``claimed == 0`` and ``losses == 0`` (its last swap won after the
claim's swap was sent). The newcomer defers to the claim, and the model's ``_run_now`` skips
``Wait`` without moving its clock, so the patience that would end the deferral never passes:
the model test spins forever instead of failing (a harness defect of its own).

Schedule (this test):

1. q writes before p's first swap: p loses (``losses == 1``).
2. p's second swap (its failure branch would claim the turn) is *delayed*: etcd applies it
   later, p is told it failed (a timeout).
3. p reads, finds no turn, swaps a third time and wins; it releases the grant. Its etcd lease
   stays in its pool, alive. p acquires nothing more.
4. etcd applies the delayed swap: its compares fail, and its failure branch claims the turn on
   p's lease.
5. Nothing of p's ever drops it (``_end_turn`` ran long ago, with nothing held); it lives as
   long as the lease, renewed whenever p's pool hands the lease to another acquisition of any
   section. Every other process defers to it for its patience when it first meets it.

Bounded by the others' patience (``MAX_PATIENCE``), as for a crashed holder, but the holder is
alive and the claim has no owner at all; the same holds for a claiming swap whose reply was lost
and that the process never learns committed its claim.

Fix idea (review): claim on a short etcd lease of the turn's own, renewed only while the
process contends. Not taken: etcd's shortest lease (2 s with default settings) outlives the
patience (``MAX_PATIENCE``, 0.5 s) that already ends such a claim: the first process to meet
it defers for its patience once, then its swap takes the claim over and deletes it. That is
what this test holds the lessor to (``turn.py``, "Liveness"); the model test's hang was its
own harness (``_run_now`` skipped a ``Wait`` without moving its clock), mended there.
"""

from __future__ import annotations

from typing import Any

from lessor import Partition
from lessor.etcd import core
from lessor.etcd.keys import SectionKeys
from lessor.etcd.ops import Op, Swap, Wait
from lessor.etcd.state import Turn
from lessor.etcd.turn import MAX_PATIENCE, MIN_PAUSE
from tests.support.driver import PREFIX, two_processes
from tests.support.etcd_model import _Key, rpc


def test_a_claim_applied_late_does_not_outlive_its_process_acquisitions() -> None:
    """Schedule in the module docstring."""
    clock, etcd, p, q = two_processes()
    turn_key = SectionKeys.of(PREFIX, "s").turn
    m, _, steps = p.lead("s", Partition(0, 4), 5.0)
    swaps = 0

    def on_op(op: Op) -> None:
        nonlocal swaps
        if isinstance(op, Swap):
            swaps += 1
            if swaps == 1:  # q writes first: p's first swap loses
                q.acquire("s", Partition(10, 11), 10.0)

    def fault(op: Op) -> str:
        return "delayed" if isinstance(op, Swap) and swaps == 2 else "ok"

    p.run("s", steps, fault=fault, on_op=on_op)
    assert m.grant is not None and isinstance(m.grant.handle, core.Held)
    assert swaps == 3 and len(etcd.delayed) == 1
    p.run("s", core.release(m.grant.handle, p.config))
    while p.cleanups:
        p.run("s", p.cleanups.pop(0))
    assert turn_key not in etcd.kvs
    etcd.apply_delayed(0)  # etcd commits the late swap: it fails, and claims the turn

    # The claim stands, on p's live etcd lease: nothing of p's knows to drop it. What it
    # costs is bounded: the first process to meet it defers for its patience, reckoned from
    # the holder's round trip the claim carries (at most MAX_PATIENCE), then takes it over.
    claim = etcd.kvs.get(turn_key)
    assert claim is not None and claim.lease in etcd.leases
    waits: list[float] = []

    def pauses(op: Op) -> None:
        if isinstance(op, Wait):
            waits.append(op.seconds)

    began = clock()
    q.acquire("s", Partition(20, 21), 10.0, on_op=pauses)
    held = q.section("s").known.turns.patience(Turn.of(_kv(claim)).attempt)
    # (its pauses: a back-off after a lost swap, then reads MIN_PAUSE apart until the
    # patience is over; this driver's clock moves only in pauses)
    assert 0 < clock() - began < held + 2 * MIN_PAUSE <= MAX_PATIENCE + 2 * MIN_PAUSE, waits
    assert turn_key not in etcd.kvs, "the swap that took the claim over deleted it"


def _kv(key: _Key) -> Any:
    return rpc.kv_pb2.KeyValue(value=key.value, lease=key.lease,
                               create_revision=key.create_revision)  # fmt: skip
