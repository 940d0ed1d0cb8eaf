"""`dlbc query` (dlbc_ops/cli/query.py) on a real chain (app + dev node) with a settled round.

The round is played with real signed txs and no training: a publisher submits a task and
releases its keys, a miner commits and reveals a model with 150 checkpoint digests, and the
verdict file the validator's app reads at ExtendVote confirms it (what `dlbc verify` would
write). So `winners` and `round` have a winner whose checkpoint list would bury the output,
which is what `--checkpoints` keeps out of the way.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from abci_app.dlbc import txs
from abci_app.dlbc.verdicts import Verdict, write_verdicts
from abci_app.keyfile import save_key
from dlbc_ops.cli.main import main as dlbc
from dlbc_ops.ports import free_port
from tests.abci_app.dlbc.helpers import spec_for
from tests.support.chains import local_chain
from tests.support.keys import keypair
from tests.support.waiting import wait_for
from training.sidecars.chain_client import ChainClient
from training.sidecars.rpc_client import RpcClient

PARAMS = {"train_seconds": 4, "reveal_seconds": 4, "verify_seconds": 4}
PUB, MINER = keypair(71), keypair(72)
TRAIN_KEY, TEST_KEY = b"T" * 32, b"S" * 32
MODEL = hashlib.sha256(b"the model").digest()
CHECKPOINTS = [hashlib.sha256(f"epoch {i}".encode()).digest() for i in range(150)]
SCORE = 812_345
REWARD = 10_000  # params.min_task_reward


@pytest.fixture(scope="module")
def settled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Round 1 settled with MINER the winner; the chain keeps running for the queries."""
    tmp = tmp_path_factory.mktemp("query-cli")
    with local_chain(tmp / "chain", params=PARAMS, block_time=0.3,
                     balances={PUB.address.hex(): 1_000_000,
                               MINER.address.hex(): 1_000_000}) as chain:
        pub, miner = (ChainClient(RpcClient(chain.rpc_url), k) for k in (PUB, MINER))
        miner.send(txs.register_miner(100_000_000, 10**12))
        spec = spec_for("query-cli", train_key=TRAIN_KEY, test_key=TEST_KEY)
        pub.send(txs.submit_task(spec, REWARD))
        rec = wait_for(lambda: (r := pub.query("round")).get("phase") == "TRAIN" and r, 20,
                       "round 1 in TRAIN", sup=chain.supervisor)
        n, task = rec["round"], rec["task_id"]
        pub.send(txs.release_train_key(task, TRAIN_KEY))
        miner.send(txs.commit_model(n, txs.model_commitment(MODEL, MINER.address, b"salt")))
        wait_for(lambda: pub.query("round")["phase"] == "REVEAL", 20, "REVEAL")
        pub.send(txs.reveal_test_set(task, TEST_KEY))
        miner.send(txs.reveal_model(n, "http://miner.example/m.safetensors", MODEL, b"salt",
                                    SCORE, CHECKPOINTS))
        write_verdicts(chain.app_home, n, [Verdict(MINER.address, MODEL, True, SCORE)])
        wait_for(lambda: pub.query(f"rounds/{n}").get("outcome") is not None, 30,
                 "round 1 to settle", sup=chain.supervisor)
        home = tmp / "home"
        save_key(home / "keys" / "miner.json", MINER)
        yield {"rpc": chain.rpc_url, "home": home,
               "record": pub.query(f"rounds/{n}"), "round": n}


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert dlbc(list(argv)) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_round_settled_with_a_winner_and_its_checkpoints(settled: dict[str, Any]) -> None:
    rec = settled["record"]
    assert rec["outcome"] == "settled" and rec["winner"]["miner"] == MINER.address.hex()
    assert rec["winner"]["checkpoint_digests"] == [d.hex() for d in CHECKPOINTS]


def test_winners_json_counts_checkpoints_unless_asked(settled: dict[str, Any],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(capsys, "query", "winners", "--json", "--rpc", settled["rpc"])
    (row,) = json.loads(out)
    w = row["winner"]
    assert "checkpoint_digests" not in w and w["checkpoints"] == len(CHECKPOINTS)
    assert (w["miner"], w["verified_score_ppm"], w["task_reward"]) == \
        (MINER.address.hex(), SCORE, REWARD)
    assert len(out.splitlines()) < 25  # the answer fits a screen
    full = json.loads(_run(capsys, "query", "winners", "--json", "--checkpoints",
                           "--rpc", settled["rpc"]))
    assert full[0]["winner"] == settled["record"]["winner"]  # the app's answer, unchanged


def test_winners_table_labels_the_payout(settled: dict[str, Any],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    w = settled["record"]["winner"]
    out = _run(capsys, "query", "winners", "--rpc", settled["rpc"])
    assert CHECKPOINTS[0].hex() not in out
    row = out.splitlines()[2].split()
    assert row[:5] == ["1", str(settled["record"]["task_id"]), "settled", MINER.address.hex(),
                       "0.8123"]
    assert row[5:] == [str(REWARD), "+", str(w["block_reward_miner"]),
                       str(w["block_reward_publisher"]), str(len(CHECKPOINTS))]
    assert "winner paid (task + block reward)" in out and "publisher's block reward" in out
    listed = _run(capsys, "query", "winners", "--checkpoints", "--rpc", settled["rpc"])
    assert f"  epoch  150  {CHECKPOINTS[-1].hex()}" in listed.splitlines()


def test_round_json_and_table_keep_checkpoints_behind_the_flag(
        settled: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    args = ("query", "round", str(settled["round"]), "--rpc", settled["rpc"])
    doc = json.loads(_run(capsys, *args, "--json"))
    assert doc["revealed"][0]["checkpoints"] == len(CHECKPOINTS)
    assert "checkpoint_digests" not in doc["revealed"][0] and "checkpoints" in doc["winner"]
    full = json.loads(_run(capsys, *args, "--json", "--checkpoints"))
    full.pop("last_block_time_ns")  # the chain moved on since the fixture's query
    assert full == {k: v for k, v in settled["record"].items() if k != "last_block_time_ns"}
    table = _run(capsys, *args)
    assert CHECKPOINTS[0].hex() not in table
    rec = settled["record"]
    paid = (f"paid: the winner gets the task reward {REWARD} + "
            f"{rec['winner']['block_reward_miner']} of the")
    assert paid in table and f"with {rec['queue_len']} task(s) queued" in table
    assert CHECKPOINTS[7].hex() in _run(capsys, *args, "--checkpoints")


def test_account_by_address_key_name_or_key_file(settled: dict[str, Any],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    home = settled["home"]
    by_address = _run(capsys, "query", "account", MINER.address.hex().upper(),
                      "--rpc", settled["rpc"])
    by_name = _run(capsys, "query", "account", "miner", "--home", str(home),
                   "--rpc", settled["rpc"])
    by_path = _run(capsys, "query", "account", str(home / "keys" / "miner.json"),
                   "--rpc", settled["rpc"])
    assert by_address == by_name == by_path
    row = by_address.splitlines()[2].split()
    assert row[0] == MINER.address.hex() and row[3] == "yes" and row[4] == "100000"  # bonded


def test_invalid_account_neither_address_nor_key(settled: dict[str, Any], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code = dlbc(["query", "account", "nobody", "--home", str(tmp_path), "--rpc",
                 settled["rpc"]])
    err = capsys.readouterr().err
    assert code == 2
    assert "'nobody' is neither an address (40 hex characters) nor a key" in err
    assert str(tmp_path / "keys" / "nobody.json") in err


def test_invalid_query_of_an_unreachable_node_is_one_clear_line() -> None:
    """No retry warnings or traceback before the answer a first-time user needs."""
    url = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.run([sys.executable, "-m", "dlbc_ops", "query", "round", "--rpc", url],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"dlbc: node unreachable at {url}") and "running?" in line


def test_round_table_lists_every_active_round_of_a_pipelined_chain(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Pipelined rounds (docs/rounds.md): while round 1 trains, round 2 is already ANNOUNCED;
    `dlbc query round` shows both, not only the newest."""
    params = {"train_seconds": 8, "reveal_seconds": 2, "verify_seconds": 2, "announce_seconds": 8}
    with local_chain(tmp_path / "chain", params=params, block_time=0.3,
                     balances={PUB.address.hex(): 1_000_000}) as chain:
        pub = ChainClient(RpcClient(chain.rpc_url), PUB)
        assert pub.query("params")["rounds_in_flight"] == 2
        for name in ("pipe-a", "pipe-b"):
            pub.send(txs.submit_task(spec_for(name, train_key=TRAIN_KEY, test_key=TEST_KEY),
                                     REWARD))
        wait_for(lambda: [r["phase"] for r in pub.query("rounds/active")["rounds"]]
                 == ["TRAIN", "ANNOUNCED"], 20, "round 1 TRAIN beside round 2 ANNOUNCED",
                 sup=chain.supervisor)
        out = _run(capsys, "query", "round", "--rpc", chain.rpc_url)
    rows = [line.split() for line in out.splitlines()]
    assert [r[:2] for r in rows if r and r[0] in ("1", "2")] == [["1", "TRAIN"], ["2", "ANNOUNCED"]]
