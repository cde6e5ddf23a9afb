"""Turn review 2: the in-memory etcd accepts Txns that etcd refuses, so the model tests cannot
see a Txn shape etcd would refuse whole.

etcd checks a Txn before it applies it (``server/etcdserver/api/v3rpc/key.go``):

* ``checkIntervals``: no branch may put a key that it (or a Txn nested in it, either of that
  Txn's branches) also deletes, nor put one key twice: "duplicate key given in txn request";
* ``checkTxnRequest``: a Txn's size is the largest of its compares and branches, at most
  ``--max-txn-ops`` (128), and a nested Txn gets only the room its parent leaves.

``tests/support/etcd_model.py`` checks neither. Today's swap is within both (see
``test_turn_review2_txn_shapes.py``, which holds on etcd), but the turn's failure branch is the
place a change would add a delete of the turn key next to the nested claim (to end a stale
claim of ours and claim again, say), and the model tests would then pass while every lost
swap of a real process failed with a permanent error, failing its acquisitions.

Fix idea: port the two checks to ``EtcdModel._txn`` (refuse with the same message).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from lessor.etcd.channels import Channels
from lessor.etcd.keys import SectionKeys
from lessor.etcd.state import SectionTxns
from lessor.testing import LocalEtcd
from tests.support.etcd_model import EtcdModel, FakeClock, ModelTransport

KEYS = SectionKeys.of("/fidelity/", "s")


@pytest.fixture
def transports(etcd_server: LocalEtcd) -> Iterator[tuple[Any, Any]]:
    model, etcd = ModelTransport(EtcdModel(FakeClock())), Channels(etcd_server.endpoints)
    try:
        yield model, etcd
    finally:
        etcd.close()


def _outcome(transport: Any, request: Any) -> str:
    try:
        transport.kv("Txn", request, 5.0, "fidelity")
    except Exception as e:
        return f"refused ({type(e).__name__})"
    return "accepted"


def _nested_claim(rpc: Any) -> Any:
    put = rpc.RequestOp(request_put=rpc.PutRequest(key=KEYS.turn, value=b"p"))
    free = rpc.Compare(key=KEYS.turn, target=rpc.Compare.VERSION, result=rpc.Compare.EQUAL,
                       version=0)  # fmt: skip
    return rpc.RequestOp(request_txn=rpc.TxnRequest(compare=[free], success=[put]))


def _delete_and_claim(rpc: Any) -> Any:
    """A failure branch that deletes the turn key and claims it again (nested)."""
    delete = rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=KEYS.turn))
    never = rpc.Compare(key=KEYS.value, target=rpc.Compare.VERSION, result=rpc.Compare.EQUAL,
                        version=12345)  # fmt: skip
    return rpc.TxnRequest(compare=[never], success=[], failure=[delete, _nested_claim(rpc)])


def _full_with_claim(rpc: Any) -> Any:
    """128 compares (the most etcd takes) and a claim nested in the failure branch."""
    compares = [
        rpc.Compare(
            key=KEYS.marker(1, seq), target=rpc.Compare.VERSION, result=rpc.Compare.EQUAL, version=0
        )
        for seq in range(127)
    ]
    compares.append(
        rpc.Compare(
            key=KEYS.value, target=rpc.Compare.VERSION, result=rpc.Compare.EQUAL, version=12345
        )
    )
    return rpc.TxnRequest(compare=compares, success=[], failure=[_nested_claim(rpc)])


@pytest.mark.parametrize("build", [_delete_and_claim, _full_with_claim])
def test_the_model_refuses_what_etcd_refuses(transports: tuple[Any, Any], build: Any) -> None:
    model, etcd = transports
    SectionTxns(model.rpc, KEYS)  # the same protobuf module on both sides
    on_etcd = _outcome(etcd, build(etcd.rpc))
    on_model = _outcome(model, build(model.rpc))
    assert on_etcd.startswith("refused"), f"etcd {on_etcd}: the probe shows nothing"
    assert on_model.startswith("refused"), f"etcd {on_etcd}, the model {on_model}"
