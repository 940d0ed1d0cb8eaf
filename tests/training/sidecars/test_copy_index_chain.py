"""The copy index on a real chain: app + dev node, a publisher and two miners, really trained.

Round 1: miners A and C train the task (a 2-level U-Net 32 filters wide under the chain's
"direct" watermark matrix: see test_copy_defence.py for why) and reveal; no verifier runs, so
the round closes *unsettled* and the task goes back to the pool for round 2. A's round-1 model
was public from its reveal on: thief B fetches it from the revealed URI, fine-tunes it 20 steps
with its own round-2 key and reveals it in round 2. `MarkIndex`, reading the real records, lists
A's round-1 mark and the verifier rejects B's model; C's honest model is not flagged. Also: a
round that is not closed or not there yet stays pending (retried), and an unreachable node costs
one try and no exception.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from training.artifacts import fetch_bytes, load_into, load_state_dict_bytes, save_model
from training.data import make_segmentation_2d
from training.models import build_model
from training.sidecars.artifact_server import ArtifactServer
from training.sidecars.chain_client import ChainClient
from training.sidecars.copy_marks import MarkIndex, OtherMark, foreign_mark, marks_to_exclude
from training.sidecars.miner import Miner, MinerConfig
from training.sidecars.offline_records import reveal
from training.sidecars.publisher import DemoDataConfig, Publisher, PublisherConfig
from training.sidecars.rpc_client import Backoff, RpcClient
from training.sidecars.sealing import seal_watermark
from training.sidecars.task_inputs import spec_hparams
from training.sidecars.verifier import check_model
from training.trainer import TrainConfig, train
from watermark import embed_loss
from watermark.layers import layer_from

from .helpers import MINER_START, free_port, key, local_chain, wait_for

PARAMS = {"train_seconds": 14, "reveal_seconds": 6, "verify_seconds": 2,
          "watermark_matrix": "direct"}
PUB, A, C, B = key(51), key(52), key(53), key(54)
TASK = DemoDataConfig(samples=40, image_size=16, hparams={"depth": 2, "base_width": 32})


@pytest.fixture(scope="module")
def chain_rounds(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Round 1 closed unsettled with A's and C's reveals, round 2 started; the chain still runs."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("copy-chain")
    with local_chain(tmp / "chain", params=PARAMS,
                     balances={PUB.address.hex(): 1_000_000, A.address.hex(): MINER_START,
                               C.address.hex(): MINER_START}) as chain:
        def miner(who: Any, name: str, seed: int) -> Miner:
            return Miner(MinerConfig(allow_private_networks=True, rpc_url=chain.rpc_url,
                                     workdir=tmp / name, poll_seconds=0.2, max_train_seconds=5.0,
                                     max_epochs=3, seed=seed, progress=False), who)

        pub = Publisher(PublisherConfig(allow_private_networks=True, rpc_url=chain.rpc_url,
                                        workdir=tmp / "pub", poll_seconds=0.2, reward=10_000), PUB)
        pub.add_prepared(pub.prepare_demo(TASK, "copy"))
        sidecars = [miner(A, "a", 0), miner(C, "c", 1), pub]
        threads = [threading.Thread(target=s.run, daemon=True) for s in sidecars]
        client = ChainClient(RpcClient(chain.rpc_url))
        out: dict[str, Any] = {"client": client, "tmp": tmp}
        try:
            for t in threads:
                t.start()
            wait_for(lambda: client.round_record(2) is not None, 90, "round 2 to start",
                     sup=chain.supervisor)
            out["r1"] = client.round_record(1)
            out["r2"] = client.round_record(2)
            out["task"] = client.task(out["r2"].record.task_id)
            out["scheme"] = client.watermark_scheme()
            # what B downloads: A's round-1 model, from the URI A revealed on chain
            rev = {r.miner: r for r in out["r1"].revealed}
            out["models"] = {who: fetch_bytes(rev[who.address].model_uri, max_bytes=1 << 26,
                                              sha256=rev[who.address].model_digest.hex(),
                                              allow_private=True)
                             for who in (A, C) if who.address in rev}
            yield out
        finally:
            for s in sidecars:
                s.stop()
            for t in threads:
                t.join(timeout=60)


def _model(chain_rounds: Any, data: bytes) -> torch.nn.Module:
    spec = chain_rounds["task"].spec
    model = build_model(spec.architecture, spec_hparams(spec))
    load_into(model, load_state_dict_bytes(data))
    return model


def test_round_one_closed_unsettled_with_both_reveals(chain_rounds: Any) -> None:
    r1 = chain_rounds["r1"]
    assert not r1.record.is_active and r1.record.winner is None
    assert r1.record.outcome is not None and r1.record.outcome.value == "unsettled"
    assert {r.miner for r in r1.revealed} == {A.address, C.address}
    assert chain_rounds["r2"].record.task_id == r1.record.task_id


def test_index_reads_the_real_records(chain_rounds: Any) -> None:
    r1, r2, task = chain_rounds["r1"], chain_rounds["r2"], chain_rounds["task"]
    index = MarkIndex(chain_rounds["client"])
    marks = index.marks(r2, task)
    current = sorted({c.miner for c in r2.commitments} | {r.miner for r in r2.revealed})
    assert marks == [
        *(OtherMark(m.hex(), r2.record.seed, "committed in round 2") for m in current),
        *(OtherMark(m.hex(), r1.record.seed, "revealed in round 1")
          for m in sorted([A.address, C.address])),
    ]
    assert index.rounds_indexed == 1 and index.pending == []
    # rounds 3-5 do not exist (and 2 is active unless it closed meanwhile): pending, retried at
    # the next pass, never raised
    added = index.update(5)
    assert index.pending in ([2, 3, 4, 5], [3, 4, 5]) and added == 4 - len(index.pending)
    index.update(5)
    assert {3, 4, 5} <= set(index.pending)


def test_invalid_copy_of_an_unsettled_rounds_reveal_is_rejected(chain_rounds: Any) -> None:
    """B fine-tunes A's round-1 model 20 steps with its round-2 key: the index catches it."""
    scheme, r2, task = chain_rounds["scheme"], chain_rounds["r2"], chain_rounds["task"]
    stolen = _model(chain_rounds, chain_rounds["models"][A])
    layer = scheme.layer(stolen)
    b_key = scheme.key(r2.record.seed, B.address, layer)
    data = make_segmentation_2d(32, 16, seed=9)  # the thief's own data: 4 steps an epoch
    cfg = TrainConfig(budget_seconds=120, max_epochs=5, batch_size=8, learning_rate=3e-3,
                      device="cpu", progress=False)
    train(stolen, data, cfg, extra_loss=lambda m: embed_loss(m, b_key))
    assert seal_watermark(stolen, b_key, scheme.threshold)[0].ok
    root: Path = chain_rounds["tmp"] / "thief"
    root.mkdir()
    digest = save_model(stolen, root / "b.safetensors")
    others = MarkIndex(chain_rounds["client"]).marks(r2, task)
    test = make_segmentation_2d(8, 16, seed=6)
    with ArtifactServer(root) as srv:
        rev = reveal(B.address, srv.url_for("b.safetensors"), digest, 500_000)
        chk = check_model(rev, task.spec, r2.record.seed, test, scheme=scheme,
                          max_bytes=1 << 26, timeout=10.0, others=others, allow_private=True)
        # the old list (this round's miners + the previous round's winner: none) lets it pass
        plain = check_model(rev, task.spec, r2.record.seed, test, scheme=scheme,
                            max_bytes=1 << 26, timeout=10.0, allow_private=True,
                            others=marks_to_exclude(r2, chain_rounds["r1"]))
    assert chk.verdict and not chk.watermark_ok
    assert f"carries {A.address.hex()}'s watermark" in chk.reason
    assert "revealed in round 1" in chk.reason
    assert chk.watermark_min_confidence > scheme.threshold  # B's own mark passed
    assert plain.verdict and plain.watermark_ok, plain.reason


def test_honest_model_of_the_chain_is_not_flagged(chain_rounds: Any) -> None:
    scheme, r2, task = chain_rounds["scheme"], chain_rounds["r2"], chain_rounds["task"]
    honest = _model(chain_rounds, chain_rounds["models"][C])
    layer = scheme.layer(honest)
    others = MarkIndex(chain_rounds["client"]).marks(r2, task)
    assert any(o.miner == A.address.hex() and o.seed == chain_rounds["r1"].record.seed
               for o in others)  # A's real round-1 mark is among the keys tested
    assert foreign_mark(layer_from(honest, layer), layer, C.address.hex(), others,
                        scheme) is None
    # and A's model, were A to build on it in a later round, is its own: not flagged either
    own = _model(chain_rounds, chain_rounds["models"][A])
    assert foreign_mark(layer_from(own, layer), layer, A.address.hex(),
                        [o for o in others if o.seed != r2.record.seed], scheme) is None


def test_unreachable_node_is_one_try_and_no_exception(chain_rounds: Any) -> None:
    dead = ChainClient(RpcClient(f"http://127.0.0.1:{free_port()}", timeout=1.0,
                                 backoff=Backoff(attempts=1)))
    index = MarkIndex(dead)
    r2, task = chain_rounds["r2"], chain_rounds["task"]
    current = sorted({c.miner for c in r2.commitments} | {r.miner for r in r2.revealed})
    assert index.marks(r2, task) == [OtherMark(m.hex(), r2.record.seed, "committed in round 2")
                                     for m in current]  # this round's only
    assert index.pending == [1] and index.rounds_indexed == 0
    # the node comes back (here: the live one): the pending round is read at the next call
    index.chain = chain_rounds["client"]
    assert any(m.seed == chain_rounds["r1"].record.seed for m in index.marks(r2, task))
    assert index.pending == []
