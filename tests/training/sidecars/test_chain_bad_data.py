"""A miner against a live chain whose task data was tampered with after submission (issue 6):
the digest check refuses it before decryption, the miner logs and counts the fault, commits
nothing, leaves nothing behind, and keeps following the chain."""

from __future__ import annotations

import threading
from pathlib import Path

from training.sidecars.miner import Miner, MinerConfig
from training.sidecars.publisher import DemoDataConfig, Publisher, PublisherConfig

from .helpers import MINER_START, TINY_TASK, key, local_chain, wait_for

# "direct": TINY_TASK's 8-wide U-Net (288 coordinates) cannot hold the default "diff" (2 x 256).
PARAMS = {"train_seconds": 4, "reveal_seconds": 2, "verify_seconds": 2,
          "watermark_matrix": "direct"}


def test_invalid_tampered_training_data(tmp_path: Path) -> None:
    pub_key, miner_key = key(31), key(32)
    with local_chain(tmp_path / "chain", params=PARAMS,
                     balances={pub_key.address.hex(): 100_000,
                               miner_key.address.hex(): MINER_START}) as chain:
        miner = Miner(MinerConfig(allow_private_networks=True, rpc_url=chain.rpc_url, workdir=tmp_path / "miner",
                                  poll_seconds=0.2, progress=False), miner_key)
        pub = Publisher(PublisherConfig(allow_private_networks=True, rpc_url=chain.rpc_url, workdir=tmp_path / "pub",
                                        poll_seconds=0.2, reward=10_000), pub_key)
        task = pub.prepare_demo(DemoDataConfig(**TINY_TASK), "demo")
        blob = task.directory / "train.npz.enc"
        blob.write_bytes(blob.read_bytes()[:-1] + b"\x00")  # one flipped byte, same size
        threads = [threading.Thread(target=s.run, daemon=True) for s in (miner, pub)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: miner.metrics.get("errors_total", kind="data") >= 1, 30,
                     "the miner to refuse the data")
            rec = wait_for(lambda: chain.rpc.abci_query("rounds/1").ok
                           and (r := chain.rpc.query_json("rounds/1"))["status"] == "closed"
                           and r, 30, "round 1 to close")
            wait_for(lambda: miner.rounds_closed >= 1, 10, "the miner to see the close")
            assert all(t.is_alive() for t in threads)
        finally:
            for s in (miner, pub):
                s.stop()
            for t in threads:
                t.join(timeout=15)
    assert rec["key_released"] and rec["outcome"] == "no_reveal" and not rec["commitments"]
    assert miner.metrics.get("commits_total") == 0
    assert miner.metrics.get("training_seconds_total") == 0
    # Verify nothing was left behind: no download, no model, no round state
    assert not list((tmp_path / "miner").glob("round-*"))
    assert not (tmp_path / "miner" / "rounds" / "1").exists()
    assert not list((tmp_path / "miner" / "artifacts").iterdir())
