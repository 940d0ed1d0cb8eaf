"""Sidecars against a real chain when the publisher never releases its key (issue 6 bad input),
and `dlbc query` on that chain's answers."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from dlbc_ops.cli.main import main as dlbc
from training.sidecars.miner import Miner, MinerConfig
from training.sidecars.publisher import DemoDataConfig, Publisher, PublisherConfig

from .helpers import MINER_START, TINY_TASK, fees_paid, key, local_chain, wait_for

# "direct": TINY_TASK's 8-wide U-Net (288 coordinates) cannot hold the default "diff" (2 x 256).
PARAMS = {"train_seconds": 3, "reveal_seconds": 2, "verify_seconds": 2,
          "withhold_fee_ppm": 100_000, "watermark_matrix": "direct"}
REWARD = 10_000  # params.min_task_reward
START = 500_000


@pytest.fixture(scope="module")
def withheld(tmp_path_factory: pytest.TempPathFactory):
    """Run one round whose publisher withholds the key; yields (chain, publisher, miner, rec)."""
    tmp = tmp_path_factory.mktemp("withheld")
    pub_key, miner_key = key(11), key(12)
    with local_chain(tmp / "chain", params=PARAMS,
                     balances={pub_key.address.hex(): START,
                               miner_key.address.hex(): MINER_START}) as chain:
        miner = Miner(MinerConfig(allow_private_networks=True, rpc_url=chain.rpc_url, workdir=tmp / "miner",
                                  poll_seconds=0.2, progress=False), miner_key)
        pub = Publisher(PublisherConfig(allow_private_networks=True, rpc_url=chain.rpc_url, workdir=tmp / "pub",
                                        poll_seconds=0.2, reward=REWARD, withhold_keys=True),
                        pub_key)
        pub.add_prepared(pub.prepare_demo(DemoDataConfig(**TINY_TASK), "demo"))
        threads = [threading.Thread(target=s.run, daemon=True) for s in (miner, pub)]
        for t in threads:
            t.start()
        try:
            rpc = chain.rpc
            rec = wait_for(lambda: rpc.abci_query("rounds/1").ok
                           and (r := rpc.query_json("rounds/1"))["status"] == "closed" and r,
                           40, "round 1 to close")
            wait_for(lambda: miner.rounds_closed >= 1, 10, "the miner to see the close")
            alive = all(t.is_alive() for t in threads)
        finally:
            for s in (miner, pub):
                s.stop()
            for t in threads:
                t.join(timeout=15)
        yield {"chain": chain, "pub": pub_key, "miner": miner_key, "rec": rec,
               "miner_sc": miner, "alive": alive, "rpc_url": chain.rpc_url,
               "balances": {k: rpc.query_json(f"accounts/{k.address.hex()}")["balance"]
                            for k in (pub_key, miner_key)},
               "fees": {k: fees_paid(rpc, k.address) for k in (pub_key, miner_key)},
               "params": rpc.query_json("params")}


def test_invalid_publisher_never_releases_key(withheld: dict) -> None:
    rec, m = withheld["rec"], withheld["miner_sc"]
    assert rec["outcome"] == "key_withheld" and not rec["key_released"]
    # Verify the miner waited (no commit, nothing trained) and kept running
    assert withheld["alive"]
    assert m.metrics.get("commits_total") == 0 and m.metrics.get("training_seconds_total") == 0
    assert m.metrics.get("rounds_seen_total") >= 1
    assert not m.round_dir(1).exists() and not list(m.artifact_root.iterdir())
    # Verify the escrow came back less the withhold fee (10 % of 10,000 = the 1,000 floor); the
    # publisher paid its SubmitTask fee, the miner its RegisterMiner fee and bond
    p, fees = withheld["params"], withheld["fees"]
    fee = max(p["withhold_fee_min"], -(-REWARD * PARAMS["withhold_fee_ppm"] // 1_000_000))
    assert fee == 1_000 and fees[withheld["pub"]] > 0
    assert withheld["balances"][withheld["pub"]] == START - fee - fees[withheld["pub"]]
    assert withheld["balances"][withheld["miner"]] == \
        MINER_START - p["miner_bond"] - fees[withheld["miner"]]


def test_query_round_json_matches_chain(withheld: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert dlbc(["query", "round", "1", "--json", "--rpc", withheld["rpc_url"]]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["round"] == 1 and doc["outcome"] == "key_withheld"


def test_query_tables(withheld: dict, capsys: pytest.CaptureFixture[str]) -> None:
    url = withheld["rpc_url"]
    addr = withheld["pub"].address.hex()
    assert dlbc(["query", "account", addr, "--rpc", url]) == 0
    out = capsys.readouterr().out
    assert addr in out and str(withheld["balances"][withheld["pub"]]) in out
    assert dlbc(["query", "winners", "--rpc", url]) == 0
    out = capsys.readouterr().out
    assert "key_withheld" in out.splitlines()[2]
    assert dlbc(["query", "params", "--rpc", url]) == 0
    assert "train_seconds" in capsys.readouterr().out


def test_invalid_query_bad_input(withheld: dict, capsys: pytest.CaptureFixture[str]) -> None:
    url = withheld["rpc_url"]
    assert dlbc(["query", "account", "xyz", "--rpc", url]) == 2
    assert "40 hex" in capsys.readouterr().err
    assert dlbc(["query", "task", "999", "--rpc", url]) == 2
    assert "nothing at" in capsys.readouterr().err


@pytest.mark.parametrize("source", ["demo", "npz"])
def test_task_submit_cli_lands_a_task(withheld: dict, tmp_path: Path, source: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    import re

    from abci_app.keyfile import save_key
    from training.data import make_segmentation_2d
    from training.sidecars.rpc_client import RpcClient

    keyfile = save_key(tmp_path / "pub.json", withheld["pub"])
    if source == "demo":
        data_args = ["--demo", "--samples", "24", "--hparams", '{"depth": 2, "base_width": 8}']
    else:  # fcn needs more filters than unet2d to hold 256 watermark bits in one layer
        make_segmentation_2d(24, 16, seed=5).save_npz(tmp_path / "mine.npz")
        data_args = ["--data", str(tmp_path / "mine.npz"), "--arch", "fcn",
                     "--hparams", '{"depth": 2, "base_width": 16}']
    code = dlbc(["task", "submit", "--key", str(keyfile), *data_args, "--reward", "10500",
                 "--artifact-port", "0", "--workdir", str(tmp_path / "w"), "--no-wait",
                 "--rpc", withheld["rpc_url"], "--log-level", "warning"])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    m = re.search(r"submitted as task (\d+)", out)
    assert m, out
    with RpcClient(withheld["rpc_url"]) as rpc:
        task = rpc.query_json(f"tasks/{m.group(1)}")
    assert task["publisher"] == withheld["pub"].address.hex() and task["reward"] == 10_500
    assert task["spec"]["architecture"] == ("unet2d" if source == "demo" else "fcn")
    assert task["spec"]["input_shape"] == ([1, 80, 80] if source == "demo" else [1, 16, 16])
    assert (tmp_path / "w" / "submitted.json").exists()


def test_invalid_sidecar_cli_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert dlbc(["verify", "--app-home", str(tmp_path / "nope"), "--log-level", "error"]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert dlbc(["mine", "--key", str(tmp_path / "missing.json"), "--log-level", "error"]) == 2
    assert "key file not found" in capsys.readouterr().err
    keyless = ["task", "submit", "--key", str(tmp_path / "missing.json"), "--demo"]
    assert dlbc([*keyless, "--log-level", "error"]) == 2


def test_invalid_task_submit_over_balance(withheld: dict, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A reward the publisher cannot pay: refused by the chain, reported, nothing escrowed."""
    from abci_app.keyfile import save_key
    from training.sidecars.rpc_client import RpcClient

    keyfile = save_key(tmp_path / "pub.json", withheld["pub"])
    code = dlbc(["task", "submit", "--key", str(keyfile), "--demo", "--samples", "24",
                 "--hparams", '{"depth": 2, "base_width": 8}', "--reward", str(10 * START),
                 "--artifact-port", "0", "--workdir", str(tmp_path / "w"), "--no-wait",
                 "--rpc", withheld["rpc_url"], "--log-level", "warning"])
    assert code == 1
    assert "not accepted" in capsys.readouterr().err
    with RpcClient(withheld["rpc_url"]) as rpc:
        rewards = []
        tid = 1
        while (q := rpc.abci_query(f"tasks/{tid}")).ok:
            rewards.append(q.json()["reward"])
            tid += 1
    assert rewards and 10 * START not in rewards


def test_invalid_mine_cli_ports_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Busy artifact or metrics port: a one-line message naming the option, nothing left running."""
    import socket

    from abci_app.keyfile import save_key

    keyfile = save_key(tmp_path / "m.json", key(13))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = str(busy.getsockname()[1])
        base = ["mine", "--key", str(keyfile), "--workdir", str(tmp_path / "w"),
                "--rpc", "http://127.0.0.1:1", "--log-level", "error"]
        assert dlbc([*base, "--artifact-port", port]) == 2
        assert "--artifact-port" in capsys.readouterr().err
        assert dlbc([*base, "--artifact-port", "0", "--metrics-port", port]) == 2
        assert "--metrics-port" in capsys.readouterr().err


def test_invalid_task_submit_pickled_npz(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A user .npz holding a pickled object array is refused before anything is submitted."""
    import numpy as np

    from abci_app.keyfile import save_key

    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.array([{"evil": 1}], dtype=object), masks=np.zeros((1, 4, 4)))
    keyfile = save_key(tmp_path / "k.json", key(14))
    code = dlbc(["task", "submit", "--key", str(keyfile), "--data", str(bad),
                 "--artifact-port", "0", "--workdir", str(tmp_path / "w"),
                 "--rpc", "http://127.0.0.1:1", "--log-level", "error"])
    assert code == 2
    assert "cannot prepare the task" in capsys.readouterr().err
    assert not list((tmp_path / "w" / "artifacts").glob("task/*"))
