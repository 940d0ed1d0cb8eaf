"""Real CometBFT, the main job: `dlbc localnet --validators 2 --demo` runs one full DLBC round —
task submitted, both miners commit and reveal, every validator's verifier checks the models, the
round settles with a winner — and every node agrees on it (docs/rounds.md, docs/ranking.md,
docs/settlement.md, paper Eq. 6).

Runs the very command `make demo` runs, as a subprocess, on each pinned release (conftest.py),
and checks it leaves no process behind. Takes a few minutes: TRAIN is shortened with
--param, but two miners, two verifiers and two validators share this machine's cores.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from abci_app.keyfile import load_key
from dlbc_ops.localnet import demo, layout
from dlbc_ops.localnet.ports import busy_ports
from dlbc_ops.localnet.runner import app_hash_at, rpc_get
from tests.support.processes import processes_mentioning

VALIDATORS = 2


def _free_demo_base() -> int:
    for base in range(34000, 60000, 191):
        ports = [p for n in layout.plan_ports(VALIDATORS, base) for _, p in n.labelled()]
        ports += [p for _, p in demo.demo_ports(VALIDATORS, base)]
        if not busy_ports([layout.NodePorts(p, p, p, p, p) for p in ports]):
            return base
    raise RuntimeError("no free port range on this machine")


def _query(rpc_url: str, path: str) -> dict | None:
    res = rpc_get(f"{rpc_url}/abci_query?path={urllib.parse.quote(json.dumps(path))}")
    try:
        return json.loads(base64.b64decode(res["response"]["value"]))
    except (TypeError, KeyError, ValueError):
        return None


@pytest.mark.timeout(600)
def test_localnet_demo_settles_a_round_on_every_validator(tmp_path: Path, cometbft):
    home = tmp_path / "net"
    base = _free_demo_base()
    rpcs = [f"http://127.0.0.1:{layout.node_ports(i, base).rpc}" for i in range(VALIDATORS)]
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "dlbc_ops.cli.main", "localnet", "--validators", str(VALIDATORS),
            "--demo", "--home", str(home), "--base-port", str(base), "--no-fallback",
            "--samples", "32", "--param", "train_seconds=40", "--param", "verify_seconds=40",
            "--timeout", "120", "--cometbft", cometbft.path,
        ],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    closed = None
    try:
        deadline = time.monotonic() + 480
        while time.monotonic() < deadline and proc.poll() is None:
            rec = _query(rpcs[0], "round")
            if rec and rec.get("round") and rec.get("status") == "closed":
                closed = rec
                break
            time.sleep(2)
        assert proc.poll() is None, "dlbc localnet exited early"
        assert closed is not None, "no round closed in time"
        assert closed["outcome"] == "settled", closed
        miners = {load_key(home / "keys" / f"{n}.json").address_hex for n in demo.MINERS}
        assert closed["winner"]["miner"] in miners
        # Every validator holds the same settled round and the same app hash.
        # (another node may be a block behind node 0, the round not yet closed there: wait)
        for rpc in rpcs[1:]:
            other = None
            for _ in range(60):
                other = _query(rpc, f"rounds/{closed['round']}")
                if other is not None and other.get("end_height") is not None:
                    break
                time.sleep(0.5)
            assert other is not None and other.get("winner") == closed.get("winner")
        height = min(int(rpc_get(f"{r}/status")["sync_info"]["latest_block_height"]) for r in rpcs)
        assert len({app_hash_at(r, height) for r in rpcs}) == 1
        # Verify the money of Eq. 5-6: the winner gets the escrowed task reward plus the
        # miner's block-reward share; the publisher gets the publisher's share, which with the
        # demo's block reward is larger than the task reward it paid (so the publisher may end
        # above its starting balance: the paper's incentive to publish, not a bug)
        win = closed["winner"]
        assert win["task_reward"] == demo.DEMO_REWARD
        assert win["block_reward_miner"] + win["block_reward_publisher"] > 0
        miner = _query(rpcs[0], f"accounts/{win['miner']}")
        assert miner is not None and int(miner["balance"]) >= (
            win["task_reward"] + win["block_reward_miner"])
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out[-4000:]
    assert "started the demo publisher and miners" in out
    assert processes_mentioning(str(home)) == []
