"""Real CometBFT: a DLBC localnet reaches heights with one app hash on every node (issue 7).

Runs on each pinned release (conftest.py). What a pass shows that the socket-driver
tests cannot: CometBFT accepts our genesis (vote extensions in its version's form, app_state),
its handshake/InitChain/FinalizeBlock/Commit and vote-extension calls work against our server,
and validators on patched configs find each other over p2p.
"""

from __future__ import annotations

import base64
import json
import urllib.parse

import pytest

from dlbc_ops.localnet.runner import app_hash_at, rpc_get
from training.sidecars.rpc_client import RpcClient


@pytest.mark.timeout(240)
@pytest.mark.parametrize("validators", [1, 4])
def test_localnet_reaches_heights_with_identical_app_hashes(localnet, validators: int):
    net = localnet(validators)
    plan = net.plan
    net.wait_all(5)
    for height in (2, 3, 4, 5):
        hashes = {app_hash_at(plan.rpc_url(i), height) for i in range(plan.validators)}
        assert len(hashes) == 1 and None not in hashes, (height, hashes)
    status = rpc_get(f"{plan.rpc_url(0)}/status")
    assert status["node_info"]["network"] == plan.chain_id
    if validators > 1:
        net = rpc_get(f"{plan.rpc_url(0)}/net_info")
        assert int(net["n_peers"]) == validators - 1


@pytest.mark.timeout(180)
def test_localnet_rejects_garbage_tx_and_answers_queries(localnet):
    net = localnet(1, params=("train_seconds=42",))
    plan = net.plan
    net.wait_all(2)
    with RpcClient(plan.rpc_url(0)) as rpc:  # v0.38: a result; v1.0: an error; both refused
        res = rpc.broadcast_tx_sync(b"not a DLBC SignedTx")
    assert res.code != 0 and "SignedTx" in res.log
    query = urllib.parse.quote('"params"')
    ans = rpc_get(f"{plan.rpc_url(0)}/abci_query?path={query}")
    params = json.loads(base64.b64decode(ans["response"]["value"]))
    assert params["train_seconds"] == 42
    genesis = rpc_get(f"{plan.rpc_url(0)}/genesis")["genesis"]
    section = "feature" if plan.form == "1.0" else "abci"
    assert genesis["consensus_params"][section]["vote_extensions_enable_height"] == "1"
