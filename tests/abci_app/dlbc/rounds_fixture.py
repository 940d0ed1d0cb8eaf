"""A full DLBC round built block by block on one in-process node (used by several tests).

Cast (docs/rounds.md, docs/settlement.md, issue 3 scenario): two publishers with one task
each, three miners —
HONEST (reaches 0.90), OVERCLAIM (claims 0.99, really 0.70), COPIER (tries to reveal HONEST's
model under its own name).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from abci_app.dlbc import txs

from .helpers import NS, Key, Node, spec_for, verdict_set

VALS = [Key(f"val{i}") for i in range(4)]
POWER = 10
PUB1, PUB2 = Key("publisher1"), Key("publisher2")
HONEST, OVERCLAIM, COPIER = Key("honest"), Key("overclaim"), Key("copier")
KEYS = {PUB1.name: (b"A" * 32, b"a" * 32), PUB2.name: (b"B" * 32, b"b" * 32)}
REWARDS = {PUB1.name: 5_000, PUB2.name: 3_000}
# miners need a bond (100,000), reveal deposits (5,000) and fees (docs/economics.md)
MINER_START = 1_000_000
BALANCES = {PUB1.address: 100_000, PUB2.address: 100_000, HONEST.address: MINER_START,
            OVERCLAIM.address: MINER_START, COPIER.address: MINER_START}


def digest(name: str) -> bytes:
    return hashlib.sha256(b"model-" + name.encode()).digest()


@dataclass
class Round:
    node: Node
    round_no: int
    publisher: Key
    task_id: int
    record: dict[str, Any]
    salts: dict[str, bytes] = field(default_factory=dict)


def reset_nonces() -> None:
    for k in (PUB1, PUB2, HONEST, OVERCLAIM, COPIER):
        k.nonce = 0


def submit_and_start(node: Node) -> Round:
    """Block 1: registrations and both tasks; block 2: round 1 starts."""
    reset_nonces()
    t1, s1 = KEYS[PUB1.name]
    t2, s2 = KEYS[PUB2.name]
    r = node.finalize([
        HONEST.tx(txs.register_miner(1_000_000, 10**9)),
        OVERCLAIM.tx(txs.register_miner(2_000_000, 2 * 10**9)),
        COPIER.tx(txs.register_miner(3_000_000, 3 * 10**9)),
        PUB1.tx(txs.submit_task(spec_for("one", train_key=t1, test_key=s1), REWARDS[PUB1.name])),
        PUB2.tx(txs.submit_task(spec_for("two", train_key=t2, test_key=s2, model_size=90_000),
                                REWARDS[PUB2.name])),
    ])
    assert [x.code for x in r.tx_results] == [0] * 5, [x.log for x in r.tx_results]
    node.finalize([])
    rec = node.query("round")
    publisher = PUB1 if rec["publisher"] == PUB1.address.hex() else PUB2
    return Round(node, rec["round"], publisher, rec["task_id"], rec)


def train_and_commit(rd: Round) -> None:
    """TRAIN: the key is released; HONEST, OVERCLAIM and COPIER commit."""
    node, n = rd.node, rd.round_no
    train_key, _ = KEYS[rd.publisher.name]
    rd.salts = {"honest": b"salt-h", "overclaim": b"salt-o", "copier": b"salt-c"}
    r = node.finalize([
        rd.publisher.tx(txs.release_train_key(rd.task_id, train_key)),
        HONEST.tx(txs.commit_model(n, txs.model_commitment(digest("h"), HONEST.address,
                                                           rd.salts["honest"]))),
        OVERCLAIM.tx(txs.commit_model(n, txs.model_commitment(digest("o"), OVERCLAIM.address,
                                                              rd.salts["overclaim"]))),
        # the copier has no model: it commits to something and hopes to copy at reveal time
        COPIER.tx(txs.commit_model(n, hashlib.sha256(b"nothing").digest())),
    ])
    assert [x.code for x in r.tx_results] == [0] * 4, [x.log for x in r.tx_results]


def reveal(rd: Round) -> list[int]:
    """REVEAL: test key and the three reveals; returns their codes (COPIER's fails)."""
    node, n = rd.node, rd.round_no
    node.finalize([], rd.record["train_end_ns"])
    assert node.query("round")["phase"] == "REVEAL"
    _, test_key = KEYS[rd.publisher.name]
    r = node.finalize([
        rd.publisher.tx(txs.reveal_test_set(rd.task_id, test_key)),
        HONEST.tx(txs.reveal_model(n, "file:///m/h.safetensors", digest("h"),
                                   rd.salts["honest"], 900_000, [digest("h1"), digest("h2")])),
        OVERCLAIM.tx(txs.reveal_model(n, "file:///m/o.safetensors", digest("o"),
                                      rd.salts["overclaim"], 990_000)),
        COPIER.tx(txs.reveal_model(n, "file:///m/h.safetensors", digest("h"),
                                   rd.salts["honest"], 990_000)),
    ], rd.record["train_end_ns"] + NS)
    COPIER.nonce -= 1
    return [x.code for x in r.tx_results]


def to_verify(rd: Round) -> None:
    rd.node.finalize([], rd.record["reveal_end_ns"])
    assert rd.node.query("round")["phase"] == "VERIFY"


def honest_verdicts(rd: Round, validator_index: int) -> bytes:
    """What a correct verifier finds: HONEST confirmed (±small noise), OVERCLAIM at 0.70."""
    return verdict_set(rd.round_no, [
        (HONEST.address, digest("h"), True, 899_000 + 1_000 * validator_index),
        (OVERCLAIM.address, digest("o"), True, 700_000),
    ])


def full_round_to_verify(node: Node) -> Round:
    rd = submit_and_start(node)
    train_and_commit(rd)
    codes = reveal(rd)
    assert codes[:3] == [0, 0, 0]
    to_verify(rd)
    return rd

