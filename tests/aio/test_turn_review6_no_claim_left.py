"""Turn review 6 (asyncio shell): once every acquisition of a section has ended, no claim of
its turn is left behind.

Schedule: ``test_stress_two_lessors.py``'s stress (two asyncio lessors on one etcd model,
eight to sixteen tasks on one section, random cancels, some twice, cancels landing after a
call applied, contexts cancelled), with no lost replies and no late swaps (those may leave a
claim nobody knows of, which the others' patience ends: ``turn.py``, Liveness). When every
task has ended and both lessors' clean-ups are done, the section's turn key must be gone:
each process that stopped contending deleted the claim it held or may have made
(``core/lead.py``, ``_end_turn``), whichever way its last acquisition ended.

Checked at the moment the stress starts its pump (after every task, give-back and
clean-up), for several seeds; also that some claim was made at all (otherwise the check
proves nothing). Holds. Teeth, tried by hand: with ``_end_turn`` made to drop nothing, one of
the six runs ends with a claim left (mostly the last swap of the run wins and deletes the
turn itself, so the check is weak, not blind).
"""

from __future__ import annotations

from typing import Any

import pytest

from lessor.etcd.aio_lessor import AsyncEtcdLessor
from lessor.etcd.keys import SectionKeys
from tests.aio import test_stress_two_lessors as stressed

TURN = SectionKeys.of("/r/", "s").turn


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cancels", [0.3, 0.8])
async def test_no_claim_is_left_once_every_acquisition_ended(
    monkeypatch: pytest.MonkeyPatch, seed: int, cancels: float
) -> None:
    left: list[Any] = []
    claims: list[bytes] = []
    pump = stressed.pump
    after_call = stressed.Watcher.after_call

    def watch(self: stressed.Watcher, method: str, request: Any) -> None:
        if TURN in self.etcd.kvs:
            claims.append(self.etcd.kvs[TURN].value)
        after_call(self, method, request)

    async def checked_pump(lessor: AsyncEtcdLessor, seconds: float, dur: float) -> None:
        if not left:
            left.append(stressed_etcd[0].kvs.get(TURN))
        await pump(lessor, seconds, dur)

    stressed_etcd: list[Any] = []
    init = stressed.Watcher.__init__

    def keep(self: stressed.Watcher, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        stressed_etcd.append(self.etcd)

    monkeypatch.setattr(stressed.Watcher, "__init__", keep)
    monkeypatch.setattr(stressed.Watcher, "after_call", watch)
    monkeypatch.setattr(stressed, "pump", checked_pump)
    watcher = await stressed.stress(seed, workers=16, cancels=cancels, durs=(0.05, 0.1))
    assert watcher.violations == []
    assert claims, "no claim was ever made: the check proves nothing"
    assert left == [None], f"a claim outlived every acquisition: {left[0]}"
