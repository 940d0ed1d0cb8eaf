"""Proof of learning on a real chain (issue 15): publisher, miner and verifier on a real app +
dev node whose genesis has `proof_of_learning=4`.

Round 1 is honest: the miner trains from its anchored start with replayable epochs, publishes
its checkpoints beside its model, and the verifier replays four epochs of them before it
confirms; the round settles with the miner as the winner. In round 2 the miner forges its
history after training: every checkpoint between the anchored start and the last is replaced by
a point on the straight line between them (the "interpolated" forgery, with the digests the
reveal carries updated to match, so only a replay can tell). The verifier refutes it with
`trajectory_failed`, the round has no winner and the reveal deposit is forfeited.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from training.proof.checkpoint import load_checkpoint, save_checkpoint
from training.proof.manifest import checkpoint_file_name
from training.sidecars.miner import Miner, MinerConfig
from training.sidecars.publisher import DemoDataConfig, Publisher, PublisherConfig
from training.sidecars.rpc_client import RpcClient
from training.sidecars.verifier import Verifier, VerifierConfig

from .helpers import MINER_START, TINY_TASK, key, local_chain, wait_for

PARAMS = {"train_seconds": 8, "reveal_seconds": 4, "verify_seconds": 10, "rounds_in_flight": 1,
          "watermark_matrix": "direct", "proof_of_learning": 4}
PUB, MINER = key(81), key(82)


def _forge_history(miner: Miner, n: int) -> None:
    """Replace checkpoints 1..E-1 of round n by interpolations between epoch 0 and epoch E
    (same config, consistent steps, fresh digests in the work the reveal sends)."""
    from torch import nn

    from training.models import build_model

    work = miner.work[n]
    ckdir = Path(work.checkpoint_dir)
    first = load_checkpoint((ckdir / checkpoint_file_name(0)).read_bytes())
    last = load_checkpoint((ckdir / checkpoint_file_name(work.epochs)).read_bytes())
    for e in range(1, work.epochs):
        t = e / work.epochs
        model: nn.Module = build_model(first.config.arch, first.config.hparams)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(first.weights[name] * (1 - t) + last.weights[name] * t)
        real = load_checkpoint((ckdir / checkpoint_file_name(e)).read_bytes())
        opt = real.optimizer(model)  # the real optimizer state: only the weights are forged
        work.checkpoint_digests[e] = save_checkpoint(
            ckdir / checkpoint_file_name(e), model, opt, epoch=e, step=real.step,
            config=real.config)


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("pol")
    torch.set_num_threads(1)
    with local_chain(tmp / "chain", params=PARAMS,
                     balances={PUB.address.hex(): 1_000_000,
                               MINER.address.hex(): MINER_START}) as chain:
        rpc = RpcClient(chain.rpc_url)
        miner = Miner(MinerConfig(allow_private_networks=True, rpc_url=chain.rpc_url,
                                  workdir=tmp / "miner", poll_seconds=0.2,
                                  max_train_seconds=4.0, max_rounds=2, progress=False),
                      MINER)
        verifier = Verifier(VerifierConfig(allow_private_networks=True, rpc_url=chain.rpc_url,
                                           workdir=tmp / "verifier", app_home=chain.app_home,
                                           poll_seconds=0.2, per_model_seconds=8.0))
        pub = Publisher(PublisherConfig(allow_private_networks=True, rpc_url=chain.rpc_url,
                                        workdir=tmp / "pub", poll_seconds=0.2, reward=10_000),
                        PUB)
        pub.demo_config = DemoDataConfig(**TINY_TASK)
        pub.prepare_demo(pub.demo_config, "first")
        pub.keep_pending = 1
        forged: list[int] = []

        def on_event(event: str, fields: dict[str, Any]) -> None:
            # on the miner's loop thread, after the commit and before the reveal
            if event == "committed" and fields.get("round") == 2:
                _forge_history(miner, 2)
                forged.append(2)

        miner.listeners.append(on_event)
        sidecars = [miner, verifier, pub]
        threads = [threading.Thread(target=sc.run, daemon=True, name=sc.role)
                   for sc in sidecars]
        try:
            threads[0].start()
            threads[1].start()
            wait_for(lambda: rpc.query_json(f"accounts/{MINER.address.hex()}")["miner"], 30,
                     "the miner to register", sup=chain.supervisor)
            threads[2].start()

            def closed(n: int) -> bool:
                return (rpc.abci_query(f"rounds/{n}").ok
                        and rpc.query_json(f"rounds/{n}")["status"] == "closed")

            wait_for(lambda: closed(1) and closed(2), 150, "rounds 1 and 2 to close",
                     sup=chain.supervisor)
            rounds = {n: rpc.query_json(f"rounds/{n}") for n in (1, 2)}
            verdicts = {n: json.loads((chain.app_home / "verdicts" / f"round-{n}.json")
                                      .read_text()) for n in (1, 2)}
            deposit = rpc.query_json("params")["reveal_deposit"]
        finally:
            for sc in sidecars:
                sc.stop()
            for t in threads:
                t.join(timeout=30)
            rpc.close()
    assert not any(t.is_alive() for t in threads)
    return {"rounds": rounds, "verdicts": verdicts, "miner": miner, "verifier": verifier,
            "forged": forged, "deposit": deposit}


def test_honest_trajectory_is_replayed_and_the_round_settles(played: dict[str, Any]) -> None:
    rec, miner = played["rounds"][1], played["miner"]
    work = miner.work[1]
    # Verify the miner revealed checkpoints 0..E, listed in its published manifest
    assert rec["outcome"] == "settled" and rec["winner"]["miner"] == MINER.address.hex()
    (revealed,) = rec["revealed"]
    assert len(revealed["checkpoint_digests"]) == work.epochs + 1 >= 2
    manifest = json.loads((Path(work.checkpoint_dir) / "manifest.json").read_text())
    assert [c["sha256"] for c in manifest["checkpoints"]] == revealed["checkpoint_digests"]
    assert manifest["pol"]["miner"] == MINER.address.hex()
    # Verify the verifier replayed epochs of it (its check says which) and confirmed
    (chk,) = [c for c in played["verifier"].checks[1] if c.verdict]
    assert chk.trajectory_ok and chk.trajectory.startswith("epochs "), chk
    assert "replayed" in chk.trajectory
    (v,) = played["verdicts"][1]["verdicts"]
    assert "trajectory_failed" not in v and v["watermark_ok"]


def test_invalid_forged_history_is_refuted_on_chain(played: dict[str, Any]) -> None:
    assert played["forged"] == [2]
    rec = played["rounds"][2]
    # Verify the forged trajectory was refuted: a verdict with trajectory_failed, no winner
    (v,) = played["verdicts"][2]["verdicts"]
    assert v["trajectory_failed"] is True and v["watermark_ok"] is True
    (chk,) = [c for c in played["verifier"].checks[2] if c.verdict]
    assert not chk.trajectory_ok and "does not replay" in chk.trajectory, chk
    assert rec["outcome"] == "no_winner" and rec["winner"] is None
    statuses = {x["miner"]: x["status"] for x in rec["verdicts"]}
    assert statuses == {MINER.address.hex(): "refuted"}
