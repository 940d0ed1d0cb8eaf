"""A whole DLBC network on a 4-validator `cometbft testnet`, once per supported CometBFT release.

One network per release runs through the tests of this module in order (a DLBC round takes a
minute or two of BFT time, so the faults are injected into the rounds of one network rather than
into a fresh network each):

1. the demo runs: a publisher broadcasting through node0's RPC, two miners following node1, four
   verifiers writing verdicts that ride in vote extensions, Settle injected by whichever node
   proposes; a round settles and the winner is paid, the same on every node;
2. kill -9 one validator's app mid-round: the other three keep committing and the round settles;
   restarted, CometBFT's handshake replays what it missed and its app hash matches the others;
3. the same for kill -9 of one `cometbft node`;
4. kill -9 all four apps at once, restart them: the chain resumes with nothing committed lost;
5. the app hash, read from every node's RPC, is identical at every height;
6. a fifth, non-validator full node started after several rounds block-syncs from genesis,
   re-executes every block (Settle txs included) and reaches the validators' app hashes.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from abci_app.keyfile import load_key
from dlbc_ops.cli import main as cli
from dlbc_ops.localnet import demo, layout
from dlbc_ops.localnet import plan as lp
from dlbc_ops.localnet.runner import (
    app_command,
    app_hash_at,
    node_context,
    node_height,
    rpc_get,
    start_localnet,
)
from dlbc_ops.localnet.tomlpatch import patch_toml
from dlbc_ops.ports import free_port
from dlbc_ops.supervisor import Supervisor, wait_for_port
from tests.support.ports import cometbft_base
from tests.support.waiting import wait_for

from .conftest import LINES, Localnet, require_line

VALIDATORS = 4
REWARD = 10_000
# Short phases (BFT seconds), tiny data: four verifiers and two miners share two cores. Rounds
# are pipelined (reveal + verify <= train, so the genesis gets rounds_in_flight=2): every fault
# below hits a network with two rounds in flight (issue 14). The demo's verifiers give a model
# VERIFY less 4 s (demo.per_model_seconds: fetch with its checkpoints, score, watermark,
# trajectory replay, while the next round trains beside it). A round whose checks were capped
# at 20 s (the verifier's default per-miner bound, before demo.per_miner_seconds) ran out of
# time on a slow CI machine and settled with no winner; 48 s leaves room for that machine.
PARAMS = ("train_seconds=64", "reveal_seconds=12", "verify_seconds=48")
TIMEOUT_COMMIT = "500ms"


def _query(rpc_url: str, path: str) -> Any:
    res = rpc_get(f"{rpc_url}/abci_query?path={urllib.parse.quote(json.dumps(path))}")
    try:
        return json.loads(base64.b64decode(res["response"]["value"]))
    except (TypeError, KeyError, ValueError):
        return None


@dataclass(slots=True)
class DemoNet(Localnet):
    """The conftest's Localnet plus the demo's round queries and per-node waits."""

    def height(self, i: int) -> int:
        return node_height(self.rpc(i)) or 0

    def heights(self, nodes: range | list[int] | None = None) -> list[int]:
        return [self.height(i) for i in (nodes if nodes is not None else range(VALIDATORS))]

    def wait(self, pred: Any, timeout_s: float, what: str) -> Any:
        return wait_for(pred, timeout_s, what, 0.3, sup=self.sup)

    def wait_heights(self, height: int, nodes: range | list[int], timeout_s: float = 90) -> None:
        self.wait(lambda: min(self.heights(nodes)) >= height, timeout_s,
                  f"height {height} on nodes {list(nodes)}")

    def round(self, i: int = 0) -> dict[str, Any]:
        return _query(self.rpc(i), "round") or {}

    def closed_rounds(self, i: int = 0) -> list[dict[str, Any]]:
        cur = int(self.round(i).get("round") or 0)
        out = []
        for n in range(1, cur + 1):
            rec = _query(self.rpc(i), f"rounds/{n}") or {}
            if rec.get("status") == "closed":
                out.append(rec)
        return out

    def restart_validator(self, i: int) -> None:
        """Bring node i back the way an operator does: app first, then its `cometbft node`.

        The node is restarted whether or not it still runs: CometBFT stops itself when its app's
        connection breaks, but its shutdown can hang (seen in CI on v1.0, the process alive and
        stuck for minutes), and a node left in that state never reconnects. `restart` kills a
        running one first."""
        ctx = node_context(self.plan, i)
        for name in (f"app{i}", f"cometbft{i}"):
            self.sup.restart(name)
            port = ctx.rpc_port if name.startswith("cometbft") else self.plan.node_ports(i).abci
            wait_for_port(port, self.sup.child(name), 60)


@pytest.fixture(scope="module", params=LINES, ids=[f"v{line}" for line in LINES])
def net(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[DemoNet]:
    comet = require_line(request.param)
    home = tmp_path_factory.mktemp(f"demo-v{comet.line}") / "net"
    base = cometbft_base(VALIDATORS, extra=3)
    args = ["localnet", "--validators", str(VALIDATORS), "--demo", "--home", str(home),
            "--base-port", str(base), "--no-fallback", "--prepare-only", "--cometbft", comet.path,
            "--samples", "32", "--reward", str(REWARD), "--timeout-commit", TIMEOUT_COMMIT]
    for p in PARAMS:
        args += ["--param", p]
    assert cli.main(args) == 0
    plan = lp.load_plan(home)
    assert plan is not None and plan.form == comet.line
    settings = demo.DemoSettings(samples=32, reward=REWARD)
    sup = Supervisor(home / "logs")
    try:
        start_localnet(plan, sup, cometbft=comet.path, verifiers=True,
                       verifier_extra=demo.verifier_args(demo.genesis_params(home), settings),
                       startup_timeout_s=90, say=lambda _line: None)
        for p in demo.demo_processes(home, plan.rpc_url(0), VALIDATORS, base, settings,
                                     sys.executable, miner_rpc_url=demo.miner_rpc_url(plan)):
            wait_for_port(p.artifact_port, sup.start(p.name, p.argv), 90)
        yield DemoNet(comet, plan, sup)
    finally:
        sup.stop()


@pytest.mark.timeout(600)
def test_round_settles_with_one_app_killed_and_restarted(net: DemoNet) -> None:
    # Verify round 1 starts (the publisher's task came in through node0's RPC)
    net.wait(lambda: (_query(net.rpc(0), "rounds/1") or {}).get("phase") == "TRAIN",
             180, "round 1 in TRAIN")
    # kill -9 validator 3's app in the middle of the round
    net.sup.kill("app3")
    h = max(net.heights([0, 1, 2]))
    net.wait_heights(h + 8, [0, 1, 2], 60)  # the other three go on (3 of 4 > 2/3 of power)
    net.restart_validator(3)
    # Verify the round settles with a winner among the two miners, on every node
    closed = net.wait(lambda: next(iter(net.closed_rounds()), None), 420, "round 1 closed")
    assert closed["outcome"] == "settled", closed
    winner = closed["winner"]
    miners = {load_key(net.root / "keys" / f"{n}.json").address_hex for n in demo.MINERS}
    assert winner["miner"] in miners
    assert winner["task_reward"] == REWARD
    # Verify the settlement carried every validator's say: Settle was built from vote extensions
    # (verdicts of the four verifiers), whoever proposed it
    assert closed["revealed"], closed
    # node 3 caught up: CometBFT's handshake replayed the blocks its app missed. Every node
    # must have committed `top` before it is asked (node 0 answered first; another node can be
    # a block behind it)
    top = max(net.heights([0, 1, 2]))
    net.wait_heights(top, list(range(VALIDATORS)), 120)
    for i in range(1, VALIDATORS):
        assert (_query(net.rpc(i), "rounds/1") or {}).get("winner") == winner, i
    hashes = {app_hash_at(net.rpc(i), top) for i in range(VALIDATORS)}
    assert len(hashes) == 1 and None not in hashes, hashes
    # Verify the winner was paid (Eq. 5-6): the Settle tx's result, read from CometBFT's own
    # block results, pays task reward + the miner's block-reward share to the winner
    results = rpc_get(f"{net.rpc(0)}/block_results?height={closed['end_height']}")
    paid = [{a["key"]: a["value"] for a in ev["attributes"]}
            for tx in results["txs_results"] or [] for ev in tx["events"]
            if ev["type"] == "dlbc.round"]
    assert {"miner": winner["miner"], "outcome": "settled",
            "amount": str(winner["task_reward"] + winner["block_reward_miner"])}.items() <= \
        next(p for p in paid if p.get("outcome") == "settled").items()
    sup = _query(net.rpc(0), "supply")
    assert sup["supply"] >= sup["escrow"] + sup["fee_pool"] + sup["bonded"] + sup["deposits"]
    # Verify the rounds were pipelined: round 2 was announced during round 1's TRAIN, trained
    # from the instant round 1's TRAIN ended, and round 1 settled while round 2 trained
    assert _query(net.rpc(0), "params")["rounds_in_flight"] == 2
    nxt = _query(net.rpc(0), "rounds/2") or {}
    assert nxt.get("start_ns") == closed["train_end_ns"], nxt
    assert _block_time_ns(net.rpc(0), nxt["start_height"]) < closed["train_end_ns"]
    assert _block_time_ns(net.rpc(0), closed["end_height"]) < nxt["train_end_ns"]


def _block_time_ns(rpc_url: str, height: int) -> int:
    from abci_app.rfc3339 import parse_rfc3339_ns

    return parse_rfc3339_ns(rpc_get(f"{rpc_url}/block?height={height}")["block"]["header"]["time"])


@pytest.mark.timeout(300)
def test_killed_cometbft_node_restarts_and_catches_up(net: DemoNet) -> None:
    net.sup.kill("cometbft2")
    h = max(net.heights([0, 1, 3]))
    net.wait_heights(h + 8, [0, 1, 3], 60)
    assert net.sup.child("app2").popen.poll() is None  # its app survives its node
    net.sup.restart("cometbft2")
    wait_for_port(net.plan.node_ports(2).rpc, net.sup.child("cometbft2"), 60)
    top = max(net.heights([0, 1, 3])) + 2
    net.wait_heights(top, [0, 1, 2, 3], 120)
    hashes = {app_hash_at(net.rpc(i), top) for i in range(VALIDATORS)}
    assert len(hashes) == 1 and None not in hashes, hashes


@pytest.mark.timeout(300)
def test_all_apps_killed_at_once_resume_with_nothing_lost(net: DemoNet) -> None:
    before = min(net.heights())
    committed = {h: app_hash_at(net.rpc(0), h) for h in range(max(2, before - 5), before + 1)}
    rounds_before = net.closed_rounds()
    for i in range(VALIDATORS):
        net.sup.kill(f"app{i}")
    time.sleep(1)
    for i in range(VALIDATORS):
        net.restart_validator(i)
    net.wait_heights(before + 10, range(VALIDATORS), 180)
    # Verify nothing committed was lost: the same blocks, app hashes and closed rounds
    for h, app_hash in committed.items():
        assert {app_hash_at(net.rpc(i), h) for i in range(VALIDATORS)} == {app_hash}, h
    after = {r["round"]: r for r in net.closed_rounds()}
    for rec in rounds_before:  # (the query adds the chain's current time: not round state)
        same = {k: v for k, v in after[rec["round"]].items() if k != "last_block_time_ns"}
        assert same == {k: v for k, v in rec.items() if k != "last_block_time_ns"}


@pytest.mark.timeout(120)
def test_app_hash_is_identical_on_every_node_at_every_height(net: DemoNet) -> None:
    top = min(net.heights())
    for h in range(2, top + 1):
        hashes = {app_hash_at(net.rpc(i), h) for i in range(VALIDATORS)}
        assert len(hashes) == 1 and None not in hashes, (h, hashes)


@pytest.mark.timeout(600)
def test_new_full_node_block_syncs_from_genesis_to_the_same_app_hash(net: DemoNet) -> None:
    # Verify several rounds exist for it to re-execute (Settle txs included)
    net.wait(lambda: len(net.closed_rounds()) >= 2, 420, "two closed rounds")
    # The rounds compared below, taken before the target height: a round that closes later
    # (they settle as soon as the verdicts are in) may lie beyond what the new node has synced.
    closed = net.closed_rounds()
    target = max(min(net.heights()), *(int(r["end_height"]) for r in closed))
    root = net.root / "fullnode"
    shutil.rmtree(root, ignore_errors=True)
    home, app_home = root / "cometbft", root / "app"
    subprocess.run([net.bin.path, "init", "--home", str(home)], check=True, capture_output=True)
    shutil.copy(layout.node_home(net.root, 0) / "config" / "genesis.json",
                home / "config" / "genesis.json")
    p2p, rpc, abci = free_port(), free_port(), free_port()
    peer = f"{net.plan.node_ids[0]}@127.0.0.1:{net.plan.node_ports(0).p2p}"
    config = home / "config" / "config.toml"
    config.write_text(patch_toml(config.read_text(), {
        "": {"proxy_app": f"tcp://127.0.0.1:{abci}", "moniker": "dlbc-fullnode"},
        "rpc": {"laddr": f"tcp://127.0.0.1:{rpc}"},
        "p2p": {"laddr": f"tcp://127.0.0.1:{p2p}", "persistent_peers": peer,
                "addr_book_strict": False, "allow_duplicate_ip": True},
        "consensus": {"timeout_commit": TIMEOUT_COMMIT},
    }))
    ctx = node_context(net.plan, 0)
    app = net.sup.start("app-full", [*app_command(ctx)[:3], "--home", str(app_home),
                                     "--address", f"tcp://127.0.0.1:{abci}"])
    wait_for_port(abci, app, 60)
    node = net.sup.start("cometbft-full", [net.bin.path, "node", "--home", str(home)])
    wait_for_port(rpc, node, 60)
    url = f"http://127.0.0.1:{rpc}"
    net.wait(lambda: (node_height(url) or 0) >= target, 300, f"full node at height {target}")
    # Verify: every block re-executed by the new node gives the validators' app hash
    for h in range(2, target + 1):
        assert app_hash_at(url, h) == app_hash_at(net.rpc(0), h), h
    status = rpc_get(f"{url}/status")
    assert status["validator_info"]["voting_power"] == "0"  # not a validator
    rounds = {r["round"]: r.get("winner") for r in closed}
    for n, w in rounds.items():
        assert (_query(url, f"rounds/{n}") or {}).get("winner") == w, n
