"""The one-round DLBC flow shared by the devnet e2e test and the real-CometBFT variant.

Given a running chain (RPC URL + the validator app's --home), start two miners with different
budgets and the verifier, wait until both miners are registered, start one publisher with one
tiny demo task, wait for round 1 to close, stop everything, then check the outcome: the better
miner is paid through verdicts -> ExtendVote -> Settle, and no key was ever logged.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from abci_app.dlbc.params import Params
from tests.training.sidecars.helpers import MINER_START, TINY_TASK, fees_paid, key, wait_for
from training.artifacts import load_model, sha256_file
from training.sidecars.base import WatermarkScheme
from training.sidecars.miner import Miner, MinerConfig
from training.sidecars.publisher import DemoDataConfig, Publisher, PublisherConfig
from training.sidecars.rpc_client import RpcClient
from training.sidecars.verifier import Verifier, VerifierConfig
from watermark import WatermarkError, detect_file

# A non-default watermark scheme (docs/watermark.md chain params): miners and the verifier must take
# it from the chain's `params`; one that used the watermark package's defaults (256 bits, "diff")
# would embed or look for the wrong key and the round would not settle.
PARAMS = {"train_seconds": 14, "reveal_seconds": 6, "verify_seconds": 10,
          "watermark_bits": 128, "watermark_matrix": "diff"}
REWARD = 10_000  # params.min_task_reward
START = 1_000_000
PUB, STRONG, WEAK = key(1), key(2), key(3)
#: Genesis of the flow: the publisher and both miners (bond, fees, deposits) are funded.
GENESIS_BALANCES = {PUB.address.hex(): START, STRONG.address.hex(): MINER_START,
                    WEAK.address.hex(): MINER_START}


def run_round(url: str, app_home: Path, tmp_path: Path, timeout: float = 90) -> dict[str, Any]:
    torch.set_num_threads(1)
    strong = Miner(MinerConfig(allow_private_networks=True, rpc_url=url, workdir=tmp_path / "strong", poll_seconds=0.2,
                               commit_margin_seconds=3.0, progress=False), STRONG)
    weak = Miner(MinerConfig(allow_private_networks=True, rpc_url=url, workdir=tmp_path / "weak", poll_seconds=0.2,
                             max_train_seconds=6.0, max_epochs=1, progress=False), WEAK)
    verifier = Verifier(VerifierConfig(allow_private_networks=True, rpc_url=url, workdir=tmp_path / "verifier",
                                       app_home=app_home, poll_seconds=0.2,
                                       per_model_seconds=5.0))
    publisher = Publisher(PublisherConfig(allow_private_networks=True, rpc_url=url, workdir=tmp_path / "publisher",
                                          poll_seconds=0.2, reward=REWARD), PUB)
    publisher.add_prepared(publisher.prepare_demo(DemoDataConfig(**TINY_TASK), "demo"))
    sidecars: list[Any] = [strong, weak, verifier]
    threads = [threading.Thread(target=s.run, daemon=True) for s in sidecars]
    rpc = RpcClient(url)
    try:
        for t in threads:
            t.start()
        wait_for(lambda: all(rpc.query_json(f"accounts/{k.address.hex()}")["miner"]
                             for k in (STRONG, WEAK)), 30, "miner registrations")
        sidecars.append(publisher)
        threads.append(threading.Thread(target=publisher.run, daemon=True))
        threads[-1].start()
        rec = wait_for(lambda: rpc.abci_query("rounds/1").ok
                       and (r := rpc.query_json("rounds/1"))["status"] == "closed" and r,
                       timeout, "round 1 to close")
        wait_for(lambda: strong.rounds_closed and weak.rounds_closed, 10,
                 "the miners to see the close")
        balances = {k: rpc.query_json(f"accounts/{k.address.hex()}")["balance"]
                    for k in (PUB, STRONG, WEAK)}
        escrow = rpc.query_json("supply")["escrow"]
        fees = {k: fees_paid(rpc, k.address) for k in (PUB, STRONG, WEAK)}
        params = rpc.query_json("params")
    finally:
        for s in sidecars:
            s.stop()
        for t in threads:
            t.join(timeout=30)
        rpc.close()
    return {"rec": rec, "balances": balances, "escrow": escrow, "fees": fees, "params": params,
            "strong": strong, "weak": weak,
            "verifier": verifier, "publisher": publisher, "app_home": app_home,
            "tmp_path": tmp_path}


def check_round(r: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    rec, strong, weak, verifier = r["rec"], r["strong"], r["weak"], r["verifier"]
    # Verify the round settled with the strong miner as the winner
    assert rec["outcome"] == "settled", rec
    assert len(rec["commitments"]) == 2 and len(rec["revealed"]) == 2
    winner = rec["winner"]
    assert winner["miner"] == STRONG.address.hex()
    checks = {c.miner: c for c in verifier.checks[1]}
    s_chk, w_chk = checks[STRONG.address.hex()], checks[WEAK.address.hex()]
    assert s_chk.verdict and s_chk.watermark_ok
    # the weak claim is checked only if it could still beat the strong score (the verifier's
    # stop rule, training/sidecars/verify_plan.py); otherwise it gets no verdict
    if w_chk.claimed_score_ppm + r["params"]["tolerance_ppm"] >= s_chk.score_ppm:
        assert w_chk.verdict and w_chk.watermark_ok and s_chk.score_ppm > w_chk.score_ppm
    else:
        assert not w_chk.verdict and "not needed" in w_chk.reason
    assert winner["verified_score_ppm"] == s_chk.score_ppm == winner["claimed_score_ppm"]

    # Verify the verdict file that ExtendVote read holds exactly the verdicts, complete
    doc = json.loads((r["app_home"] / "verdicts" / "round-1.json").read_text())
    assert sorted(v["miner"] for v in doc["verdicts"]) == sorted(
        m for m, c in checks.items() if c.verdict)
    assert doc["complete"] is True

    # Verify the money: escrow to the winner, block reward split, nothing to the loser; every
    # account paid its tx fees, both miners still hold their bond and got their reveal deposit
    # back (neither claim was refuted)
    bal, fees, bond = r["balances"], r["fees"], r["params"]["miner_bond"]
    assert all(fees[k] > 0 for k in (PUB, STRONG, WEAK))
    assert bal[STRONG] == MINER_START - bond - fees[STRONG] + REWARD + winner["block_reward_miner"]
    assert bal[WEAK] == MINER_START - bond - fees[WEAK]
    assert bal[PUB] == START - fees[PUB] - REWARD + winner["block_reward_publisher"]
    assert r["escrow"] == 0

    # Verify the served model and checkpoints are the ones revealed on chain
    work = strong.work[1]
    assert sha256_file(work.model_path) == winner["model_digest"]

    # Verify the winner carries the chain's watermark scheme, not the package default's
    seed = bytes.fromhex(rec["seed"])
    chain_scheme = WatermarkScheme.from_params({**Params().to_json(), **PARAMS})
    other_matrix = replace(chain_scheme, matrix="direct")
    model = load_model(work.model_path, "unet2d", TINY_TASK["hparams"])
    for scheme, expected in ((chain_scheme, True), (other_matrix, False)):
        wm_key = scheme.key(seed, STRONG.address, scheme.layer(model))
        assert detect_file(work.model_path, wm_key, scheme.threshold).ok is expected
    # The package defaults (256 bits, "diff": 512 coordinates) do not even fit this model (288)
    with pytest.raises(WatermarkError, match="512 coordinates"):
        WatermarkScheme.genesis_default().layer(model)
    # checkpoints of epochs 0 (the anchored start) .. E, and their manifest (proof of learning)
    ckpts = sorted((strong.round_dir(1) / "checkpoints").glob("epoch-*.safetensors"))
    assert [sha256_file(p) for p in ckpts] == winner["checkpoint_digests"]
    assert len(ckpts) == work.epochs + 1 >= 3
    assert (strong.round_dir(1) / "checkpoints" / "manifest.json").is_file()
    # ... and they were published (at reveal) under the unguessable folder of the revealed URI
    public = strong.artifact_root / work.public_dir
    assert winner["model_uri"].endswith(f"/{work.public_dir}/model.safetensors")
    assert len(work.public_dir) == 32
    assert [sha256_file(p) for p in sorted((public / "checkpoints").glob("epoch-*"))] == \
        winner["checkpoint_digests"]

    # Verify the operator metrics saw it all
    assert strong.metrics.get("commits_total") == 1 == strong.metrics.get("reveals_total")
    assert strong.metrics.get("wins_total") == 1 and weak.metrics.get("wins_total") == 0
    assert verifier.metrics.get("verdicts_total") == sum(c.verdict for c in checks.values())
    assert r["publisher"].metrics.get("reveals_total") == 2  # data key + test key
    assert strong.metrics.get("training_seconds_total") > 0

    # Verify no sidecar ever logged a data or test key
    task = r["publisher"].tasks[1]
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "round 1" in logged
    assert task.train_key.hex() not in logged and task.test_key.hex() not in logged


def capture_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
