"""Publisher, miner and verifier on two rounds at once (issue 14 part 1): a real app + dev node
with pipelined rounds (`rounds_in_flight=2`), and the same sidecars on a sequential chain.

Pipelined: round 2's TRAIN starts when round 1's TRAIN ends, round 2 is ANNOUNCED
`announce_seconds` before that. The miner downloads round 2's ciphertext while it is ANNOUNCED
(its key is not out yet), trains round 2 on its training thread while its poll loop reveals round
1, and the verifier verifies round 1 while round 2 trains; both rounds settle with the miner as
the winner. The publisher's top-up keeps a task pending so that round 2 can be announced, and
releases round 2's key while round 1 is still open. Sequential: two rounds, one after the other,
settle the same way, and no round is ever announced ahead.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from training.sidecars.base import Sidecar
from training.sidecars.miner import Miner, MinerConfig
from training.sidecars.publisher import DemoDataConfig, Publisher, PublisherConfig
from training.sidecars.rpc_client import RpcClient
from training.sidecars.verifier import Verifier, VerifierConfig

from .helpers import MINER_START, TINY_TASK, key, local_chain, wait_for

# "direct": TINY_TASK's 8-wide U-Net cannot hold the default "diff" matrix (2 x 256 coordinates).
PIPELINED = {"train_seconds": 10, "reveal_seconds": 4, "verify_seconds": 5,
             "announce_seconds": 5, "rounds_in_flight": 2, "watermark_matrix": "direct"}
SEQUENTIAL = {"train_seconds": 6, "reveal_seconds": 3, "verify_seconds": 4,
              "rounds_in_flight": 1, "watermark_matrix": "direct"}
PUB, MINER = key(71), key(72)


def _play_two_rounds(tmp: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Run publisher (topping the pool up), miner and verifier until rounds 1 and 2 closed;
    return the chain's records, the blocks' times, the miner's work and the sidecars' events."""
    torch.set_num_threads(1)
    with local_chain(tmp / "chain", params=params,
                     balances={PUB.address.hex(): 1_000_000,
                               MINER.address.hex(): MINER_START}) as chain:
        rpc = RpcClient(chain.rpc_url)
        events: list[tuple[int, str, dict[str, Any]]] = []
        lock = threading.Lock()

        def listen(event: str, fields: dict[str, Any]) -> None:
            now = time.time_ns()
            if event == "data_prefetched":  # what the chain said the moment the file was there
                fields = {**fields, "exists": Path(fields["path"]).is_file(),
                          "chain": rpc.query_json(f"rounds/{fields['round']}")}
            with lock:
                events.append((now, event, fields))

        miner = Miner(MinerConfig(allow_private_networks=True, rpc_url=chain.rpc_url,
                                  workdir=tmp / "miner", poll_seconds=0.2,
                                  max_train_seconds=6.0, max_rounds=2, progress=False),
                      MINER)
        verifier = Verifier(VerifierConfig(allow_private_networks=True, rpc_url=chain.rpc_url,
                                           workdir=tmp / "verifier", app_home=chain.app_home,
                                           poll_seconds=0.2, per_model_seconds=5.0))
        pub = Publisher(PublisherConfig(allow_private_networks=True, rpc_url=chain.rpc_url,
                                        workdir=tmp / "pub", poll_seconds=0.2, reward=10_000),
                        PUB)
        pub.demo_config = DemoDataConfig(**TINY_TASK)
        pub.prepare_demo(pub.demo_config, "first")
        pub.keep_pending = 1  # the devnet's top-up: a task waits for the round after next
        sidecars: list[Sidecar] = [miner, verifier, pub]
        for sc in sidecars:
            sc.listeners.append(listen)
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

            wait_for(lambda: closed(1) and closed(2), 120, "rounds 1 and 2 to close",
                     sup=chain.supervisor)
            rounds = {n: rpc.query_json(f"rounds/{n}") for n in (1, 2)}
            heights = {r["height"] for rec in rounds.values() for r in rec["revealed"]}
            heights |= {rec["end_height"] for rec in rounds.values()}
            block_ns = {h: rpc.get_block(h).time_ns for h in heights}
            # round n -> the action of its creation event: "announce" (ANNOUNCED ahead of its
            # TRAIN) or "start" (straight into TRAIN)
            created: dict[int, str] = {}
            for h in range(1, rpc.latest_height() + 1):
                for e in rpc.get_block(h).events:
                    if e.type == "dlbc.round" and e.get("action") in ("announce", "start"):
                        created.setdefault(int(e.get("round") or 0), str(e.get("action")))
            threads[0].join(timeout=20)  # `--rounds 2`: the miner stops by itself
            counts = {"miner_ended": not threads[0].is_alive(),
                      "closed": {sc.role: sc.rounds_closed for sc in sidecars},
                      "current_round": miner.metrics.get("current_round")}
        finally:
            for sc in sidecars:
                sc.stop()
            for t in threads:
                t.join(timeout=30)
            rpc.close()
    assert not any(t.is_alive() for t in threads)
    return {"rounds": rounds, "block_ns": block_ns, "events": events, "miner": miner,
            "counts": counts, "created": created,
            "verifier": verifier, "pub": pub, "app_home": chain.app_home}


@pytest.fixture(scope="module")
def pipelined(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _play_two_rounds(tmp_path_factory.mktemp("pipelined"), PIPELINED)


@pytest.fixture(scope="module")
def sequential(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _play_two_rounds(tmp_path_factory.mktemp("sequential"), SEQUENTIAL)


def _events(run: dict[str, Any], name: str, n: int) -> list[tuple[int, dict[str, Any]]]:
    return [(t, f) for t, e, f in run["events"] if e == name and f.get("round") == n]


def _check_both_settled(run: dict[str, Any]) -> None:
    for n in (1, 2):
        rec = run["rounds"][n]
        # Verify each round settled, paid to the miner, on the verdicts of that round's file
        assert rec["outcome"] == "settled", rec
        assert rec["winner"]["miner"] == MINER.address.hex()
        work = run["miner"].work[n]
        assert work.committed and work.revealed
        assert rec["winner"]["model_digest"] == work.model_digest
        doc = json.loads((run["app_home"] / "verdicts" / f"round-{n}.json").read_text())
        assert doc["complete"] is True and doc["round"] == n
        assert [v["miner"] for v in doc["verdicts"]] == [MINER.address.hex()]
        checks = run["verifier"].checks[n]
        assert [c.miner for c in checks if c.verdict] == [MINER.address.hex()]
        # Verify the committed event carries the round's timing (the devnet and bench read it)
        (_t, committed), = _events(run, "committed", n)
        assert committed["train_started_ns"] == work.train_started_ns > 0
        assert committed["train_ended_ns"] == work.train_ended_ns > work.train_started_ns
        assert 0 < committed["step_seconds"] <= committed["train_seconds"]
        assert committed["epochs"] == work.epochs >= 1
        assert committed["checkpoint_dir"] == str(run["miner"].round_dir(n) / "checkpoints")
        elapsed = committed["epoch_elapsed"]
        assert elapsed == work.epoch_elapsed and len(elapsed) == work.epochs
        assert elapsed == sorted(elapsed) and elapsed[-1] <= committed["train_seconds"]
    # Verify the loop's bookkeeping: `--rounds 2` ended the miner once both closed, every role
    # counted both closes, the miner's gauge shows the newest round it saw
    counts = run["counts"]
    assert counts["miner_ended"] and counts["closed"]["miner"] == 2
    assert counts["closed"]["publisher"] >= 2 and counts["closed"]["verifier"] >= 2
    assert counts["current_round"] >= 2


def test_two_pipelined_rounds_both_settle_with_a_winner(pipelined: dict[str, Any]) -> None:
    _check_both_settled(pipelined)
    r1, r2 = pipelined["rounds"][1], pipelined["rounds"][2]
    # Verify the schedule was pipelined: round 2 trained from the end of round 1's TRAIN
    assert r2["start_ns"] == r1["train_end_ns"]
    assert r1["task_id"] != r2["task_id"]  # the top-up's task
    # Verify rounds 2 and 3 were announced ahead of their TRAIN (round 1: a fresh chain starts
    # at once), and the miner saw round 3 before round 2 closed
    created = pipelined["created"]
    assert created[1] == "start" and created[2] == created[3] == "announce"
    assert pipelined["counts"]["current_round"] >= 3


def test_miner_trains_the_next_round_while_it_reveals(pipelined: dict[str, Any]) -> None:
    r1 = pipelined["rounds"][1]
    w2 = pipelined["miner"].work[2]
    (reveal1,) = r1["revealed"]
    revealed_ns = pipelined["block_ns"][reveal1["height"]]
    closed_ns = pipelined["block_ns"][r1["end_height"]]
    # Verify round 1's RevealModel landed in a block while round 2's training ran
    assert w2.train_started_ns < revealed_ns < w2.train_ended_ns
    # ... and the miner's own reveal event (its poll loop) fell inside that interval too
    (rev_t, _f), = _events(pipelined, "revealed", 1)
    assert w2.train_started_ns < rev_t < w2.train_ended_ns
    # Verify round 2 was training before round 1 closed (settled during round 2's TRAIN)
    assert w2.train_started_ns < closed_ns < pipelined["rounds"][2]["train_end_ns"]


def test_miner_prefetches_the_announced_rounds_data(pipelined: dict[str, Any]) -> None:
    (t_fetch, fetched), = _events(pipelined, "data_prefetched", 2)
    # Verify the ciphertext was on disk while round 2 was ANNOUNCED, before its key was out
    assert fetched["exists"] and fetched["bytes"] > 0
    assert fetched["chain"]["phase"] == "ANNOUNCED" and not fetched["chain"]["key_released"]
    assert t_fetch < pipelined["rounds"][2]["start_ns"]
    # Verify training began after the key, from the prefetched file (gone once decrypted)
    (t_key, _k), = _events(pipelined, "train_key_released", 2)
    (t_train, _s), = _events(pipelined, "training_started", 2)
    assert t_fetch < t_key < t_train
    assert not Path(fetched["path"]).exists()


def test_publisher_releases_keys_for_two_rounds_in_flight(pipelined: dict[str, Any]) -> None:
    r1, r2 = pipelined["rounds"][1], pipelined["rounds"][2]
    assert r1["key_released"] and r1["test_key_revealed"]
    assert r2["key_released"] and r2["test_key_revealed"]
    # Verify round 2's data key went out while round 1 was still open (REVEAL/VERIFY)
    (t_key2, _k), = _events(pipelined, "train_key_released", 2)
    assert t_key2 < pipelined["block_ns"][r1["end_height"]]
    # Verify the top-up refilled the pool once round 2's task was taken from it: round 2 could
    # be announced, and a third task waits (or is already round 3's)
    assert len(pipelined["pub"].tasks) >= 3


def test_two_sequential_rounds_settle_as_before(sequential: dict[str, Any]) -> None:
    _check_both_settled(sequential)
    r1, r2 = sequential["rounds"][1], sequential["rounds"][2]
    # Verify round 2 started only after round 1 closed, and no round was announced ahead
    assert r2["start_ns"] >= sequential["block_ns"][r1["end_height"]]
    assert sequential["created"][1] == sequential["created"][2] == "start"
    assert "announce" not in sequential["created"].values()
    assert all(f["chain"]["phase"] == "TRAIN" for _t, f in
               _events(sequential, "data_prefetched", 2))
