"""End-to-end: one DLBC round on the embedded devnet with every real part (issue 6 "Shown by").

`python -m abci_app` + `dlbc node` (the development stand-in for CometBFT, 1 validator, vote
extensions on) as subprocesses; in this process: one publisher with one task, two miners with
different budgets training real U-Nets on CPU with their watermarks, and the validator's
verifier. The verifier's verdicts flow through ExtendVote into the proposer's Settle, and the
better miner is paid the escrowed reward plus its share of the block reward.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch

from training.miner import Miner, MinerConfig
from training.publisher import DemoDataConfig, Publisher, PublisherConfig
from training.verifier import Verifier, VerifierConfig
from training.artifacts import sha256_file

from tests.sidecars.helpers import TINY_TASK, key, local_chain, wait_for

pytestmark = pytest.mark.slow

PARAMS = {"train_seconds": 14, "reveal_seconds": 6, "verify_seconds": 10}
REWARD = 5_000
START = 1_000_000


def test_round_pays_the_better_miner(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    pub_key, strong_key, weak_key = key(1), key(2), key(3)
    with local_chain(tmp_path / "chain", params=PARAMS,
                     balances={pub_key.address.hex(): START}) as chain:
        url = chain.rpc_url
        strong = Miner(MinerConfig(rpc_url=url, workdir=tmp_path / "strong", poll_seconds=0.2,
                                   commit_margin_seconds=3.0, progress=False), strong_key)
        weak = Miner(MinerConfig(rpc_url=url, workdir=tmp_path / "weak", poll_seconds=0.2,
                                 max_train_seconds=3.0, max_epochs=1, progress=False), weak_key)
        verifier = Verifier(VerifierConfig(rpc_url=url, workdir=tmp_path / "verifier",
                                           app_home=chain.app_home, poll_seconds=0.2,
                                           per_model_seconds=5.0))
        publisher = Publisher(PublisherConfig(rpc_url=url, workdir=tmp_path / "publisher",
                                              poll_seconds=0.2, reward=REWARD), pub_key)
        publisher.add_prepared(publisher.prepare_demo(DemoDataConfig(**TINY_TASK), "demo"))
        sidecars = [strong, weak, verifier]
        threads = [threading.Thread(target=s.run, daemon=True) for s in sidecars]
        try:
            for t in threads:
                t.start()
            rpc = chain.rpc
            wait_for(lambda: all(rpc.query_json(f"accounts/{k.address.hex()}")["miner"]
                                 for k in (strong_key, weak_key)), 20, "miner registrations")
            threads.append(threading.Thread(target=publisher.run, daemon=True))
            sidecars.append(publisher)
            threads[-1].start()
            rec = wait_for(lambda: (r := rpc.query_json("rounds/1") if
                                    rpc.abci_query("rounds/1").ok else None)
                           and r["status"] == "closed" and r, 90, "round 1 to close")
        finally:
            for s in sidecars:
                s.stop()
            for t in threads:
                t.join(timeout=30)

        # Verify the round settled with the strong miner as the winner
        assert rec["outcome"] == "settled", rec
        assert len(rec["commitments"]) == 2 and len(rec["revealed"]) == 2
        winner = rec["winner"]
        assert winner["miner"] == strong_key.address.hex()
        checks = {c.miner: c for c in verifier.checks[1]}
        assert all(c.verdict and c.watermark_ok for c in checks.values())
        s_chk, w_chk = checks[strong_key.address.hex()], checks[weak_key.address.hex()]
        assert s_chk.score_ppm > w_chk.score_ppm
        assert winner["verified_score_ppm"] == s_chk.score_ppm == winner["claimed_score_ppm"]

        # Verify the verdict file that ExtendVote read holds both verdicts
        doc = json.loads((chain.app_home / "verdicts" / "round-1.json").read_text())
        assert sorted(v["miner"] for v in doc["verdicts"]) == sorted(checks)

        # Verify the money: escrow to the winner, block reward split, nothing to the loser
        bal = {k: rpc.query_json(f"accounts/{k.address.hex()}")["balance"]
               for k in (pub_key, strong_key, weak_key)}
        assert bal[strong_key] == REWARD + winner["block_reward_miner"]
        assert bal[weak_key] == 0
        assert bal[pub_key] == START - REWARD + winner["block_reward_publisher"]
        assert rpc.query_json("supply")["escrow"] == 0

        # Verify the served model and checkpoints are the ones committed on chain
        work = strong.work[1]
        assert sha256_file(work.model_path) == winner["model_digest"]
        ckpts = sorted((tmp_path / "strong" / "artifacts" / "round-1" / "checkpoints").iterdir())
        assert [sha256_file(p) for p in ckpts] == winner["checkpoint_digests"]
        assert len(ckpts) == work.epochs >= 2

        # Verify the operator metrics saw it all
        assert strong.metrics.get("commits_total") == 1 == strong.metrics.get("reveals_total")
        assert strong.metrics.get("wins_total") == 1 and weak.metrics.get("wins_total") == 0
        assert verifier.metrics.get("verdicts_total") == 2
        assert publisher.metrics.get("reveals_total") == 2  # data key + test key
        assert strong.metrics.get("training_seconds_total") > 0
