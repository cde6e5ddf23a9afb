"""Turn review 6: beside a process that does not know the turn (a version from before it,
during a rolling upgrade), the turn's holder retries with pauses of 0, swap after swap.

Schedule (the in-memory etcd, on the model's clock, 1 ms per swap):

1. q (this version) takes keys 10-11, so the section value exists.
2. h asks for keys 0-4 with a 2 s deadline. Right before each of h's swaps, a process of the
   older version wins a swap of its own (it writes once per round trip, as a hot section's
   near process does): it rewrites the section value and, knowing nothing of the turn key,
   neither compares nor deletes it.
3. h's first swap loses; its second loses too and claims the turn in its failure branch. From
   then on h holds the turn, and every swap of its loses: ``lead._pause`` gives 0 after each
   (the holder's "our next swap is the one expected to win"), until the deadline.

Invariant broken: no busy loop: a pause of 0 is never followed by another
(``test_turn_review5_no_busy_loop.py``; ``lead._pause``: "a pause of 0 there is a busy loop").
Here the swaps follow one another with no pause at all (198 pauses of 0 in a row when the
test stops h after 200 lost swaps; at 1 ms a swap, some 2,000 before its 2 s deadline), each
a raft write in etcd. Without the turn a loser waits a jitter of up to 2 ms after each lost
swap (``Backoff.after_conflict``): so h sends its lost swaps about twice as often as a loser
on main would at 1 ms, not unboundedly more. Other processes of this version would defer to
h's claim for up to their patience, take it over, lose the takeover swap to the old process
as h does, and defer again (by reading; not run here): one swap per patience each, while h
spins. It ends at h's deadline, or when the old process stops.

Severity: low. Only while a process of an older version contends on the section (a rolling
upgrade; nothing says whether versions may be mixed), and the extra load is bounded (twice
main's retry rate for the holder); but it is the pattern ``_pause`` itself calls a busy loop.

Fix idea: a pause of 0 only for the first loss while holding (the claim's point: the state
from the failure branch holds while the others defer). A second loss in a row while holding
shows a writer that does not defer: back off as anyone (``_pause``: ``holding and _lost`` and
no pause of 0 just before), or drop the claim after it.
"""

from __future__ import annotations

from lessor import Partition
from lessor.etcd.keys import SectionKeys
from lessor.etcd.ops import Op, Swap, Wait
from tests.support.driver import PREFIX, Interrupt, two_processes
from tests.support.etcd_model import rpc

ROUND_TRIP = 0.001


def test_the_holder_backs_off_from_a_writer_that_does_not_defer() -> None:
    """Schedule in the module docstring."""
    clock, etcd, h, q = two_processes()
    q.acquire("s", Partition(10, 11), 30.0)
    value_key = SectionKeys.of(PREFIX, "s").value
    m, _, steps = h.lead("s", Partition(0, 4), 2.0)
    zeros_in_a_row, longest, swaps = 0, 0, 0

    def old_version_wins_first(op: Op) -> None:
        nonlocal zeros_in_a_row, longest, swaps
        if isinstance(op, Wait):
            zeros_in_a_row = zeros_in_a_row + 1 if op.seconds == 0 else 0
            longest = max(longest, zeros_in_a_row)
        if isinstance(op, Swap):
            swaps += 1
            clock.advance(ROUND_TRIP)
            value = etcd.kvs[value_key].value  # an old lessor's swap rewrites the value
            put = rpc.RequestOp(request_put=rpc.PutRequest(key=value_key, value=value))
            etcd.call("kv", "Txn", rpc.TxnRequest(success=[put]))

    def stop(op: Op) -> BaseException | None:
        return Interrupt() if swaps >= 200 else None  # enough to tell; h gives up there

    try:
        h.run("s", steps, on_op=old_version_wins_first, throw=stop)
    except Interrupt:
        pass
    finally:
        h.finish_cleanups("s")
        q.finish_cleanups("s")
    assert not m.settled or m.grant is None
    assert longest <= 1, f"{longest} pauses of 0 in a row ({swaps} swaps, all lost)"
