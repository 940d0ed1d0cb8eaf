"""Real CometBFT: a DLBC localnet reaches heights with one app hash on every node (issue 7).

Skipped without `cometbft` on PATH (see conftest.py). What a pass shows that the socket-driver
tests cannot: CometBFT accepts our genesis (vote extensions in its version's form, app_state),
its handshake/InitChain/FinalizeBlock/Commit and vote-extension calls work against our server,
and validators on patched configs find each other over p2p.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse

import pytest

from abci_app.localnet import plan as lp
from abci_app.localnet.runner import app_hash_at, rpc_get


def _wait(plan: lp.LocalnetPlan, height: int, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        heights = [
            int(
                (rpc_get(f"{plan.rpc_url(i)}/status") or {})
                .get("sync_info", {})
                .get("latest_block_height", 0)
            )
            for i in range(plan.validators)
        ]
        if min(heights) >= height:
            return
        time.sleep(0.5)
    pytest.fail(f"nodes did not reach height {height}: {heights}")


@pytest.mark.timeout(240)
@pytest.mark.parametrize("validators", [1, 4])
def test_localnet_reaches_heights_with_identical_app_hashes(localnet_factory, validators: int):
    plan = localnet_factory(validators)
    _wait(plan, 5)
    for height in (2, 3, 4, 5):
        hashes = {app_hash_at(plan.rpc_url(i), height) for i in range(plan.validators)}
        assert len(hashes) == 1 and None not in hashes, (height, hashes)
    status = rpc_get(f"{plan.rpc_url(0)}/status")
    assert status["node_info"]["network"] == plan.chain_id
    if validators > 1:
        net = rpc_get(f"{plan.rpc_url(0)}/net_info")
        assert int(net["n_peers"]) == validators - 1


@pytest.mark.timeout(180)
def test_localnet_rejects_garbage_tx_and_answers_queries(localnet_factory):
    plan = localnet_factory(1, params=("train_seconds=42",))
    _wait(plan, 2)
    tx = "0x" + b"not a DLBC SignedTx".hex()
    res = rpc_get(f"{plan.rpc_url(0)}/broadcast_tx_sync?tx={tx}")
    assert res is not None and int(res["code"]) != 0 and res["log"]
    query = urllib.parse.quote('"params"')
    ans = rpc_get(f"{plan.rpc_url(0)}/abci_query?path={query}")
    params = json.loads(base64.b64decode(ans["response"]["value"]))
    assert params["train_seconds"] == 42
    genesis = rpc_get(f"{plan.rpc_url(0)}/genesis")["genesis"]
    section = "feature" if plan.form == "1.0" else "abci"
    assert genesis["consensus_params"][section]["vote_extensions_enable_height"] == "1"
