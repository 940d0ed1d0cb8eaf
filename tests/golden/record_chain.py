"""Record the golden chain: every ABCI request of a scripted multi-round chain and what it did.

Run once, on the code whose behaviour is the reference (`python -m tests.golden.record_chain`);
`test_golden_chain.py` replays the recorded requests into a fresh app and demands the same app
hash at every height, the same tx codes and the same final state bytes. The requests are
CometBFT's own wire types, so the recording outlives any refactor of our code.

The script covers every tx type and both settlement outcomes: registrations, two tasks, a round
settled by four validators' vote extensions (winner paid, overclaim and copy refuted), a round
left unsettled (task returned), transfers, an unbond, garbage and replayed txs.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

from abci_app.dlbc import txs
from abci_app.pb.tendermint.abci import types_pb2 as abci
from abci_app.pb.tendermint.crypto import keys_pb2
from tests.abci_app.dlbc import rounds_fixture as rf
from tests.abci_app.dlbc.helpers import CHAIN_ID, NS, Node, app_state, extended_commit, ts

OUT = Path(__file__).with_name("chain.json")


class RecordingNode(Node):
    """A Node that keeps every request it sends and the app hash after each Commit."""

    def __init__(self, home: Path) -> None:
        self.blocks: list[dict[str, object]] = []
        super().__init__(home, [(k, rf.POWER) for k in rf.VALS], app_state(rf.BALANCES))

    def finalize(self, txs_, time_ns=None):  # type: ignore[no-untyped-def]
        self.time_ns = self.time_ns + NS if time_ns is None else time_ns
        self.height += 1
        req = abci.RequestFinalizeBlock(txs=list(txs_), height=self.height,
                                        time=ts(self.time_ns),
                                        hash=self.block_hash(self.height))
        resp = self.app.finalize_block(req)
        self.app.commit(abci.RequestCommit())
        self.blocks.append({"request": req.SerializeToString(deterministic=True).hex(),
                            "app_hash": resp.app_hash.hex(),
                            "codes": [r.code for r in resp.tx_results]})
        return resp


def state_digest(node: Node) -> str:
    """sha256 over every (key, value) of the committed store in key order."""
    h = hashlib.sha256()
    for k, v in node.app.store.iter_prefix(b""):
        h.update(len(k).to_bytes(4, "big") + k + len(v).to_bytes(4, "big") + v)
    return h.hexdigest()


def script(node: RecordingNode) -> None:
    rd = rf.full_round_to_verify(node)
    # round 1 settles on four complete verdict sets
    ec = extended_commit([(k, rf.POWER) for k in rf.VALS],
                         [rf.honest_verdicts(rd, i) for i in range(4)], node.height)
    pub = rd.publisher
    node.finalize([txs.build_settle_tx(rd.round_no, ec),
                   pub.tx(txs.transfer(rf.HONEST.address, 7)),
                   b"garbage", pub.tx(txs.transfer(rf.HONEST.address, 7), nonce=0)])
    # round 2: the other task; nobody verifies, so it ends unsettled and is returned
    for _ in range(3):
        node.finalize([])
    rec = node.query("round")
    node.finalize([], rec["train_end_ns"])
    node.finalize([], rec["reveal_end_ns"])
    node.finalize([], rec["verify_end_ns"])
    node.finalize([rf.OVERCLAIM.tx(txs.unbond_miner())])
    for _ in range(3):
        node.finalize([])


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        rf.reset_nonces()
        node = RecordingNode(Path(tmp))
        script(node)
        doc = {
            "why": __doc__.splitlines()[0],
            # the same request Node.__init__ sent
            "init_chain": abci.RequestInitChain(
                chain_id=CHAIN_ID, app_state_bytes=app_state(rf.BALANCES), initial_height=1,
                validators=[abci.ValidatorUpdate(pub_key=keys_pb2.PublicKey(ed25519=k.pub),
                                                 power=rf.POWER) for k in rf.VALS],
            ).SerializeToString(deterministic=True).hex(),
            "blocks": node.blocks,
            "state_sha256": state_digest(node),
        }
        node.close()
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"recorded {len(doc['blocks'])} blocks -> {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
