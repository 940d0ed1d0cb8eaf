"""Issue 3 scenario over real sockets: 4 validator apps (`python -m abci_app --app dlbc`)
driven by dlbc_ops.devnode.driver exactly as CometBFT drives them, their ed25519 keys signing the vote
extensions. Two publishers' tasks, three miners: the honest one wins, the over-claimer and the
copier get nothing, total supply is conserved and all four app hashes agree at every height.

Verdict files are fabricated per validator: they are the app's documented input (verdicts.py),
written with the same `write_verdicts` the verifier sidecar calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from abci_app.abci_client import AbciClient
from abci_app.dlbc import txs
from abci_app.dlbc.codes import Code
from abci_app.dlbc.verdicts import Verdict, write_verdicts
from dlbc_ops.devnode.driver import Driver
from dlbc_ops.devnode.validator_key import ValidatorKey
from dlbc_ops.supervisor import Supervisor
from tests.support import REPO

from .helpers import CHAIN_ID, GENESIS_NS, NS, app_state, spec_for
from .rounds_fixture import (
    BALANCES,
    COPIER,
    HONEST,
    KEYS,
    OVERCLAIM,
    PUB1,
    PUB2,
    REWARDS,
    digest,
    reset_nonces,
)

ROOT = REPO
#: The newest supported Python with the consensus core's libraries (`make compat`).
COMPAT_PYTHON = ROOT / ".venv-py313" / "bin" / "python"


def spawn(sup: Supervisor, home: Path, address: str, python: str = sys.executable) -> None:
    """One validator's `python -m abci_app --app dlbc`, through the project's one launcher."""
    sup.start(home.name, [python, "-m", "abci_app", "--home", str(home), "--address", address,
                          "--app", "dlbc", "--log-level", "warning"],
              env={"PYTHONPATH": str(ROOT)})


async def query(driver: Driver, path: str) -> dict:
    r = await driver.query(path)
    assert r.code == 0, r.log
    return json.loads(r.value)


async def run_scenario(tmp_path: Path, addrs: list[str]) -> None:
    vals = [ValidatorKey.generate(b"scenario-val-%d" % i) for i in range(4)]
    driver = Driver([AbciClient(a) for a in addrs], vals, CHAIN_ID, app_state=app_state(BALANCES),
                    block_store_dir=tmp_path / "blocks", genesis_time_ns=GENESIS_NS)
    await driver.handshake()
    reset_nonces()
    hashes: list[bytes] = []

    async def block(block_txs: list[bytes], t: int) -> list[int]:
        res = await driver.run_height(block_txs, t)
        assert len(set(res.app_hashes)) == 1
        hashes.append(res.app_hash)
        return [r.code for r in res.tx_results[0]]

    t = GENESIS_NS
    supply0 = (await query(driver, "supply"))["supply"]
    # height 1: miners register, both publishers submit a task
    (t1, s1), (t2, s2) = KEYS[PUB1.name], KEYS[PUB2.name]
    t += NS
    assert await block([
        HONEST.tx(txs.register_miner(1_000_000, 10**9)),
        OVERCLAIM.tx(txs.register_miner(2_000_000, 2 * 10**9)),
        COPIER.tx(txs.register_miner(3_000_000, 3 * 10**9)),
        PUB1.tx(txs.submit_task(spec_for("one", train_key=t1, test_key=s1), REWARDS[PUB1.name])),
        PUB2.tx(txs.submit_task(spec_for("two", train_key=t2, test_key=s2, model_size=90_000),
                                REWARDS[PUB2.name])),
    ], t) == [0] * 5
    # height 2: round 1 starts with task 1 (smallest ranking score)
    t += NS
    await block([], t)
    rnd = await query(driver, "round")
    assert (rnd["round"], rnd["task_id"], rnd["phase"]) == (1, 1, "TRAIN")
    assert rnd["unselected"] == [2]
    # height 3: key released, three commitments (the copier commits to nothing useful)
    salts = {"h": b"salt-h", "o": b"salt-o"}
    t += NS
    assert await block([
        PUB1.tx(txs.release_train_key(1, t1)),
        HONEST.tx(txs.commit_model(1, txs.model_commitment(digest("h"), HONEST.address,
                                                           salts["h"]))),
        OVERCLAIM.tx(txs.commit_model(1, txs.model_commitment(digest("o"), OVERCLAIM.address,
                                                              salts["o"]))),
        COPIER.tx(txs.commit_model(1, hashlib.sha256(b"nothing").digest())),
    ], t) == [0] * 4
    # height 4: TRAIN is over
    t = rnd["train_end_ns"]
    await block([], t)
    assert (await query(driver, "round"))["phase"] == "REVEAL"
    # the copier tries HONEST's revealed model: CheckTx refuses it (and ProcessProposal would)
    copy = COPIER.tx(txs.reveal_model(1, "file:///m/h.safetensors", digest("h"), salts["h"],
                                      990_000))
    assert (await driver.check_tx(copy)).code == Code.REVEAL_MISMATCH
    # height 5: test key and the two real reveals
    t += NS
    assert await block([
        PUB1.tx(txs.reveal_test_set(1, s1)),
        HONEST.tx(txs.reveal_model(1, "file:///m/h.safetensors", digest("h"), salts["h"],
                                   900_000, [digest("h1")])),
        OVERCLAIM.tx(txs.reveal_model(1, "file:///m/o.safetensors", digest("o"), salts["o"],
                                      990_000)),
    ], t) == [0, 0, 0]
    # the verifier sidecars of validators 0-2 write verdicts; validator 3's is still busy
    for i in range(3):
        write_verdicts(tmp_path / f"home{i}", 1, [
            Verdict(HONEST.address, digest("h"), True, 899_000 + 2_000 * i),
            Verdict(OVERCLAIM.address, digest("o"), True, 700_000),
        ])
    # height 6: VERIFY; the validators extend their precommits with their verdicts
    t = rnd["reveal_end_ns"]
    res = await driver.run_height([], t)
    hashes.append(res.app_hash)
    assert (await query(driver, "round"))["phase"] == "VERIFY"
    assert [bool(e) for e in res.vote_extensions] == [True, True, True, False]
    # height 7: the proposer injects Settle; everyone verifies it and pays the honest miner
    before = {k.name: (await query(driver, f"accounts/{k.address.hex()}"))["balance"]
              for k in (HONEST, OVERCLAIM, COPIER, PUB1)}
    t += NS
    res = await driver.run_height([], t)
    hashes.append(res.app_hash)
    assert len(res.txs) == 1 and len(set(res.app_hashes)) == 1
    assert [r.code for r in res.tx_results[0]] == [0]
    rec = await query(driver, "rounds/1")
    assert rec["outcome"] == "settled"
    assert rec["winner"]["miner"] == HONEST.address.hex()
    assert rec["winner"]["verified_score_ppm"] == 901_000
    pub_amt, miner_amt = (rec["winner"]["block_reward_publisher"],
                          rec["winner"]["block_reward_miner"])
    assert pub_amt + miner_amt == 1_000
    after = {k.name: (await query(driver, f"accounts/{k.address.hex()}"))["balance"]
             for k in (HONEST, OVERCLAIM, COPIER, PUB1)}
    # the winner's reveal deposit comes back; the over-claimer's claim is refuted by 3 of 4
    # validators (> 1/3 of the power): its deposit is forfeited (docs/economics.md)
    deposit = (await query(driver, "params"))["reveal_deposit"]
    assert after["honest"] == before["honest"] + REWARDS[PUB1.name] + miner_amt + deposit
    assert after["overclaim"] == before["overclaim"]
    assert after["copier"] == before["copier"]
    assert after["publisher1"] == before["publisher1"] + pub_amt
    # supply: genesis + one minted block reward, all of it held by accounts (the validators'
    # hold the fees paid out to them), escrow, the fee pool, bonds and reveal deposits
    sup = await query(driver, "supply")
    assert sup["supply"] == supply0 + 1_000
    holders = [*BALANCES, *(v.address for v in vals)]
    held = sum([(await query(driver, f"accounts/{a.hex()}"))["balance"] for a in holders])
    assert held + sup["escrow"] + sup["fee_pool"] + sup["bonded"] + sup["unbonding"] \
        + sup["deposits"] == sup["supply"]
    assert sup["bonded"] == 3 * 100_000 and sum(
        [(await query(driver, f"accounts/{v.address.hex()}"))["balance"] for v in vals]) > 0
    assert sup["escrow"] == REWARDS[PUB2.name]
    # height 8: the next round picks the other publisher's task
    t += NS
    await block([], t)
    nxt = await query(driver, "round")
    assert (nxt["round"], nxt["task_id"], nxt["publisher"]) == (2, 2, PUB2.address.hex())
    assert len(set(hashes)) == len(hashes)
    await driver.close()


def test_scenario_four_validators_full_round(tmp_path: Path) -> None:
    addrs = [f"unix://{tmp_path}/v{i}.sock" for i in range(4)]
    sup = Supervisor(tmp_path / "logs", grace_s=5.0)
    try:
        for i in range(4):
            spawn(sup, tmp_path / f"home{i}", addrs[i])
        asyncio.run(run_scenario(tmp_path, addrs))
    finally:
        sup.stop()


@pytest.mark.skipif(not COMPAT_PYTHON.exists(),
                    reason="no .venv-py313: `make compat` found no python3.13 on this machine")
@pytest.mark.skipif(sys.version_info[:2] == (3, 13), reason="this run is itself on 3.13")
def test_scenario_agrees_bit_for_bit_across_python_versions(tmp_path: Path) -> None:
    """Validators 0-1 on the oldest supported Python (this one), 2-3 on the newest: the same
    scenario, every app hash identical at every height (run_scenario asserts it)."""
    out = subprocess.run([str(COMPAT_PYTHON), "-c", "import sys; print(sys.version_info[:2])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "(3, 13)" and sys.version_info[:2] == (3, 11)
    addrs = [f"unix://{tmp_path}/v{i}.sock" for i in range(4)]
    pythons = [sys.executable, sys.executable, str(COMPAT_PYTHON), str(COMPAT_PYTHON)]
    sup = Supervisor(tmp_path / "logs", grace_s=5.0)
    try:
        for i in range(4):
            spawn(sup, tmp_path / f"home{i}", addrs[i], pythons[i])
        asyncio.run(run_scenario(tmp_path, addrs))
    finally:
        sup.stop()
