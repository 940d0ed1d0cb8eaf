"""Pipelined rounds over real sockets: four validator apps (`python -m abci_app --app dlbc`)
driven as CometBFT drives them, with two rounds in flight (issue 14).

Round 1 reveals, verifies and settles while round 2 trains; round 2 settles while round 3 trains.
One validator is killed with SIGKILL while two rounds are in flight and restarted from its LMDB
home; the handshake brings it back and every app hash agrees at every height. The same run with
validators 2-3 on the newest supported Python shows the pipelined schedule is bit-identical
across versions.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest

from abci_app.abci_client import AbciClient
from abci_app.dlbc import txs
from abci_app.dlbc.verdicts import Verdict, write_verdicts
from abci_app.pb.tendermint.abci import types_pb2 as abci
from dlbc_ops.devnode.driver import Driver
from dlbc_ops.devnode.validator_key import ValidatorKey
from dlbc_ops.supervisor import Supervisor

from .helpers import CHAIN_ID, GENESIS_NS, NS, Key, app_state, spec_for
from .rounds_fixture import HONEST, OVERCLAIM, digest
from .test_pipeline_rounds import ANNOUNCE_S, BALANCES, KEYS, PUB1, PUB2, PUB3, REWARD
from .test_scenario import COMPAT_PYTHON, spawn

VICTIM = 3


async def query(driver: Driver, path: str) -> dict:
    r = await driver.query(path)
    assert r.code == 0, r.log
    return json.loads(r.value)


def salted(miner: Key, n: int, name: str) -> tuple[bytes, bytes]:
    salt = f"salt-{n}-{name}".encode()
    return txs.model_commitment(digest(name), miner.address, salt), salt


class Run:
    """One pipelined chain: the driver, the block store, the validators' homes."""

    def __init__(self, tmp_path: Path, sup: Supervisor, addrs: list[str],
                 pythons: list[str]) -> None:
        self.tmp, self.sup, self.addrs, self.pythons = tmp_path, sup, addrs, pythons
        self.vals = [ValidatorKey.generate(b"pipeline-val-%d" % i) for i in range(4)]
        self.state = app_state(BALANCES, rounds_in_flight=2, announce_seconds=ANNOUNCE_S)
        self.hashes: list[bytes] = []
        self.driver = self.new_driver()

    def new_driver(self) -> Driver:
        return Driver([AbciClient(a) for a in self.addrs], self.vals, CHAIN_ID,
                      app_state=self.state, block_store_dir=self.tmp / "blocks",
                      genesis_time_ns=GENESIS_NS)

    async def block(self, block_txs: list[bytes], t: int) -> list[int]:
        res = await self.driver.run_height(block_txs, t)
        assert len(set(res.app_hashes)) == 1, f"app hashes differ at height {res.height}"
        self.hashes.append(res.app_hash)
        return [r.code for r in res.tx_results[0]]

    async def active(self) -> list[tuple[int, str]]:
        return [(r["round"], r["phase"])
                for r in (await query(self.driver, "rounds/active"))["rounds"]]

    def verdicts(self, n: int, found: list[Verdict]) -> None:
        for i in range(4):
            write_verdicts(self.tmp / f"home{i}", n, found)

    async def crash_and_restart(self) -> None:
        """kill -9 the victim between two heights, start it again on its home, handshake."""
        await self.driver.close()
        victim = self.sup.child(f"home{VICTIM}")
        self.sup.kill(f"home{VICTIM}", signal.SIGKILL)
        assert victim.popen.returncode == -signal.SIGKILL
        spawn(self.sup, self.tmp / f"home{VICTIM}", self.addrs[VICTIM], self.pythons[VICTIM])
        self.driver = self.new_driver()
        height = len(self.hashes)
        assert await self.driver.handshake() == height
        info = await self.driver.clients[VICTIM].call("info", abci.RequestInfo())
        assert (info.last_block_height, bytes(info.last_block_app_hash)) == \
            (height, self.hashes[-1])


async def settle_next(run: Run, t: int, n: int) -> None:
    """VERIFY has begun: the next height's proposer injects round n's Settle."""
    res = await run.driver.run_height([], t)
    run.hashes.append(res.app_hash)
    assert len(res.txs) == 1 and [r.code for r in res.tx_results[0]] == [0]
    assert len(set(res.app_hashes)) == 1
    rec = await query(run.driver, f"rounds/{n}")
    assert rec["outcome"] == "settled" and rec["winner"]["miner"] == HONEST.address.hex()


async def scenario(run: Run) -> None:
    await run.driver.handshake()
    for k in (PUB1, PUB2, PUB3, HONEST, OVERCLAIM):
        k.nonce = 0
    t = GENESIS_NS + NS
    assert await run.block([
        HONEST.tx(txs.register_miner(1_000_000, 10**9)),
        OVERCLAIM.tx(txs.register_miner(2_000_000, 2 * 10**9)),
        *[p.tx(txs.submit_task(spec_for(p.name, train_key=KEYS[p.name][0],
                                        test_key=KEYS[p.name][1], model_size=10_000 * (i + 1)),
                               REWARD)) for i, p in enumerate((PUB1, PUB2, PUB3))],
    ], t) == [0] * 5
    t += NS
    await run.block([], t)
    r1 = await query(run.driver, "rounds/1")
    c1h, s1h = salted(HONEST, 1, "h1")
    c1o, s1o = salted(OVERCLAIM, 1, "o1")
    t += NS
    assert await run.block([PUB1.tx(txs.release_train_key(1, KEYS[PUB1.name][0])),
                            HONEST.tx(txs.commit_model(1, c1h)),
                            OVERCLAIM.tx(txs.commit_model(1, c1o))], t) == [0] * 3
    t = r1["train_end_ns"] - ANNOUNCE_S * NS
    await run.block([], t)
    assert await run.active() == [(1, "TRAIN"), (2, "ANNOUNCED")]
    t = r1["train_end_ns"]
    await run.block([], t)
    assert await run.active() == [(1, "REVEAL"), (2, "TRAIN")]
    r2 = await query(run.driver, "rounds/2")
    c2h, s2h = salted(HONEST, 2, "h2")
    t += NS
    assert await run.block([
        PUB2.tx(txs.release_train_key(2, KEYS[PUB2.name][0])),
        PUB1.tx(txs.reveal_test_set(1, KEYS[PUB1.name][1])),
        HONEST.tx(txs.reveal_model(1, "file:///m/h1", digest("h1"), s1h, 900_000)),
        OVERCLAIM.tx(txs.reveal_model(1, "file:///m/o1", digest("o1"), s1o, 990_000)),
        HONEST.tx(txs.commit_model(2, c2h)),
    ], t) == [0] * 5
    run.verdicts(1, [Verdict(HONEST.address, digest("h1"), True, 900_000),
                     Verdict(OVERCLAIM.address, digest("o1"), True, 700_000)])
    # two rounds in flight: a validator dies and comes back from its own LMDB files
    await run.crash_and_restart()
    t = r1["reveal_end_ns"]
    await run.block([], t)
    assert await run.active() == [(1, "VERIFY"), (2, "TRAIN")]
    t += NS
    await settle_next(run, t, 1)
    assert await run.active() == [(2, "TRAIN")]
    t = r2["train_end_ns"] - ANNOUNCE_S * NS
    await run.block([], t)
    t = r2["train_end_ns"]
    await run.block([], t)
    assert await run.active() == [(2, "REVEAL"), (3, "TRAIN")]
    t += NS
    assert await run.block([
        PUB2.tx(txs.reveal_test_set(2, KEYS[PUB2.name][1])),
        HONEST.tx(txs.reveal_model(2, "file:///m/h2", digest("h2"), s2h, 880_000)),
    ], t) == [0, 0]
    run.verdicts(2, [Verdict(HONEST.address, digest("h2"), True, 881_000)])
    t = r2["reveal_end_ns"]
    await run.block([], t)
    t += NS
    await settle_next(run, t, 2)
    assert await run.active() == [(3, "TRAIN")]
    supply = await query(run.driver, "supply")
    assert supply["escrow"] == REWARD  # round 3's task only
    assert len(set(run.hashes)) == len(run.hashes)
    await run.driver.close()


def _run(tmp_path: Path, pythons: list[str]) -> None:
    addrs = [f"unix://{tmp_path}/p{i}.sock" for i in range(4)]
    sup = Supervisor(tmp_path / "logs", grace_s=5.0)
    try:
        for i in range(4):
            spawn(sup, tmp_path / f"home{i}", addrs[i], pythons[i])
        asyncio.run(scenario(Run(tmp_path, sup, addrs, pythons)))
    finally:
        sup.stop()


def test_pipelined_rounds_four_validators_with_a_crash(tmp_path: Path) -> None:
    _run(tmp_path, [sys.executable] * 4)


@pytest.mark.skipif(not COMPAT_PYTHON.exists(),
                    reason="no .venv-py313: `make compat` found no python3.13 on this machine")
@pytest.mark.skipif(sys.version_info[:2] == (3, 13), reason="this run is itself on 3.13")
def test_pipelined_rounds_agree_across_python_versions(tmp_path: Path) -> None:
    _run(tmp_path, [sys.executable, sys.executable, str(COMPAT_PYTHON), str(COMPAT_PYTHON)])
