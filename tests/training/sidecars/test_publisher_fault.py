"""A publisher that breaks its test set after the miners revealed pays for the training it got
(issue 11 §5): the verifier says "test set unusable" in its vote extension, the round settles as
the publisher's fault, and the escrow goes to the miner who revealed, not back to the publisher.

Real chain (app + dev node), real publisher, miner and verifier sidecars, real training.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from abci_app.dlbc.verdicts import read_verdicts
from training.sidecars.miner import Miner, MinerConfig
from training.sidecars.publisher import DemoDataConfig, Publisher, PublisherConfig
from training.sidecars.verifier import Verifier, VerifierConfig

from .helpers import MINER_START, TINY_TASK, key, local_chain, wait_for

PARAMS = {"train_seconds": 8, "reveal_seconds": 4, "verify_seconds": 12,
          "watermark_matrix": "direct", "watermark_bits": 64}
REWARD = 10_000


def test_invalid_test_set_broken_after_reveal_is_the_publishers_fault(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    pub_key, miner_key = key(41), key(42)
    with local_chain(tmp_path / "chain", params=PARAMS,
                     balances={pub_key.address.hex(): 100_000,
                               miner_key.address.hex(): MINER_START}) as chain:
        miner = Miner(MinerConfig(allow_private_networks=True, rpc_url=chain.rpc_url, workdir=tmp_path / "miner",
                                  poll_seconds=0.2, max_epochs=1, progress=False), miner_key)
        pub = Publisher(PublisherConfig(allow_private_networks=True, rpc_url=chain.rpc_url, workdir=tmp_path / "pub",
                                        poll_seconds=0.2, reward=REWARD), pub_key)
        task = pub.prepare_demo(DemoDataConfig(**TINY_TASK), "demo")
        pub.add_prepared(task)
        threads = [threading.Thread(target=s.run, daemon=True) for s in (miner, pub)]
        for t in threads:
            t.start()
        verifier = None
        try:
            wait_for(lambda: miner.metrics.get("reveals_total") >= 1, 60, "the miner's reveal")
            # The miner has what it needs; now the test set no longer matches its commitment
            blob = task.directory / "test.npz.enc"
            blob.write_bytes(blob.read_bytes()[:-1] + b"\x00")
            verifier = Verifier(VerifierConfig(allow_private_networks=True, rpc_url=chain.rpc_url, workdir=tmp_path / "ver",
                                               app_home=chain.app_home, poll_seconds=0.2,
                                               per_model_seconds=5.0, test_set_attempts=2))
            vt = threading.Thread(target=verifier.run, daemon=True)
            vt.start()
            threads.append(vt)
            rec = wait_for(lambda: chain.rpc.abci_query("rounds/1").ok
                           and (r := chain.rpc.query_json("rounds/1"))["status"] == "closed"
                           and r, 60, "round 1 to close")
            found = read_verdicts(chain.app_home, 1)
        finally:
            for s in (miner, pub, *(() if verifier is None else (verifier,))):
                s.stop()
            for t in threads:
                t.join(timeout=15)
        assert rec["outcome"] == "publisher_fault", rec
        assert found is not None and found.test_set_unusable and not found.verdicts
        assert verifier is not None and verifier.metrics.get("errors_total", kind="data") >= 1
        # Verify the money: the escrow went to the revealing miner, the task is not re-queued
        t = chain.rpc.query_json(f"tasks/{rec['task_id']}")
        assert t["status"] == "forfeited"
        acct = chain.rpc.query_json(f"accounts/{miner_key.address.hex()}")
        assert acct["deposit"] == 0  # its reveal deposit came back
        # start - (fees of RegisterMiner, CommitModel, RevealModel: < 2,000) + the whole escrow
        assert MINER_START + REWARD - 2_000 <= acct["balance"] + acct["bonded"] \
            <= MINER_START + REWARD
        sup = chain.rpc.query_json("supply")
        assert sup["escrow"] == 0
