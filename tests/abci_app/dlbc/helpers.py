"""Shared fixtures for the DLBC state-machine tests: real keys, real LMDB, real app instances.

`Node` calls a real `DlbcApplication` in process (the same handlers the socket server calls);
the scenario tests drive four of them over real sockets with `dlbc_ops.devnode.driver.Driver`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.timestamp_pb2 import Timestamp

from abci_app.dlbc import txs
from abci_app.dlbc.app import DlbcApplication
from abci_app.dlbc.crypto import address_of, public_key_bytes, sign_vote_extension
from abci_app.pb.dlbc.v1 import tx_pb2, vote_pb2
from abci_app.pb.tendermint.abci import types_pb2 as abci
from abci_app.pb.tendermint.crypto import keys_pb2
from tests.support import GENESIS_NS

CHAIN_ID = "dlbc-test"
NS = 1_000_000_000
# short phases so a whole round fits in a few blocks
TEST_PARAMS = {"train_seconds": 100, "reveal_seconds": 20, "verify_seconds": 30,
               "k_ppm": 1_000_000, "max_queue_len": 10, "block_reward": 1_000,
               "tolerance_ppm": 20_000, "withhold_fee_ppm": 100_000,
               # small test rewards stay valid; fees, bonds and deposits keep their defaults
               "min_task_reward": 10}


class Key:
    """A deterministic ed25519 account key (test fixture)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.priv = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(name.encode()).digest())
        self.pub = public_key_bytes(self.priv)
        self.address = address_of(self.pub)
        self.nonce = 0

    def tx(self, msg: Any, nonce: int | None = None) -> bytes:
        n = self.nonce if nonce is None else nonce
        if nonce is None:
            self.nonce += 1
        return txs.build_signed_tx(self.priv, CHAIN_ID, n, msg)


def app_state(balances: dict[bytes, int], **params: int) -> bytes:
    p = dict(TEST_PARAMS)
    p.update(params)
    return json.dumps({"params": p, "accounts": [
        {"address": a.hex(), "balance": b} for a, b in sorted(balances.items())]}).encode()


def spec_for(name: str, *, train_key: bytes, test_key: bytes, model_size: int = 10_000,
             data_size: int = 50_000, flops: int = 1_000_000, min_score_ppm: int = 500_000
             ) -> tx_pb2.TaskSpec:
    return txs.task_spec(
        architecture="cnn", hyperparams_json='{"width": 8}', model_size_bytes=model_size,
        flops_per_sample=flops, data_uri=f"file:///data/{name}.bin", data_size_bytes=data_size,
        data_sha256=hashlib.sha256(name.encode()).digest(),
        data_key_sha256=txs.key_commitment(train_key), test_uri=f"file:///data/{name}-test.bin",
        test_sha256=hashlib.sha256(b"t" + name.encode()).digest(),
        test_key_sha256=txs.key_commitment(test_key), metric="accuracy",
        min_score_ppm=min_score_ppm, input_shape=[1, 8, 8], num_classes=10, num_samples=100)


def ts(time_ns: int) -> Timestamp:
    return Timestamp(seconds=time_ns // NS, nanos=time_ns % NS)


def verdict_set(round_no: int, verdicts: Sequence[tuple[bytes, bytes, bool, int]], *,
                complete: bool = True, test_set_unusable: bool = False) -> bytes:
    """A valid extension: canonical, verdicts in (miner, digest) order, as ExtendVote sends."""
    return vote_pb2.VerdictSet(
        round=round_no, complete=complete, test_set_unusable=test_set_unusable, verdicts=[
            vote_pb2.Verdict(miner=m, model_digest=d, watermark_ok=ok, score_ppm=s)
            for m, d, ok, s in sorted(verdicts, key=lambda v: v[0] + v[1])],
    ).SerializeToString(deterministic=True)


def extended_commit(validators: Sequence[tuple[Key, int]], extensions: Sequence[bytes],
                    height: int, round_: int = 0, chain_id: str = CHAIN_ID
                    ) -> abci.ExtendedCommitInfo:
    """An ExtendedCommitInfo signed as CometBFT signs it (real ed25519)."""
    votes = []
    for (key, power), ext in zip(validators, extensions, strict=True):
        votes.append(abci.ExtendedVoteInfo(
            validator=abci.Validator(address=key.address, power=power), vote_extension=ext,
            extension_signature=sign_vote_extension(key.priv, ext, height, round_, chain_id),
            block_id_flag=2))
    return abci.ExtendedCommitInfo(round=round_, votes=votes)


class Node:
    """One real DlbcApplication driven in process, block by block."""

    def __init__(self, home: Path, validators: Sequence[tuple[Key, int]], state: bytes) -> None:
        self.app = DlbcApplication(home)
        self.home = home
        self.height = 0
        self.time_ns = GENESIS_NS
        self.app.init_chain(abci.RequestInitChain(
            chain_id=CHAIN_ID, app_state_bytes=state, initial_height=1,
            validators=[abci.ValidatorUpdate(pub_key=keys_pb2.PublicKey(ed25519=k.pub), power=p)
                        for k, p in validators]))

    def block_hash(self, height: int) -> bytes:
        return hashlib.sha256(b"block-%d" % height).digest()

    def process(self, txs_: Sequence[bytes], time_ns: int) -> int:
        return self.app.process_proposal(abci.RequestProcessProposal(
            txs=list(txs_), height=self.height + 1, time=ts(time_ns),
            hash=self.block_hash(self.height + 1))).status

    def prepare(self, txs_: Sequence[bytes], time_ns: int,
                local_last_commit: abci.ExtendedCommitInfo | None = None,
                max_tx_bytes: int = 1 << 20) -> list[bytes]:
        req = abci.RequestPrepareProposal(txs=list(txs_), height=self.height + 1,
                                          time=ts(time_ns), max_tx_bytes=max_tx_bytes)
        if local_last_commit is not None:
            req.local_last_commit.CopyFrom(local_last_commit)
        return [bytes(t) for t in self.app.prepare_proposal(req).txs]

    def finalize(self, txs_: Sequence[bytes], time_ns: int | None = None
                 ) -> abci.ResponseFinalizeBlock:
        self.time_ns = self.time_ns + NS if time_ns is None else time_ns
        self.height += 1
        resp = self.app.finalize_block(abci.RequestFinalizeBlock(
            txs=list(txs_), height=self.height, time=ts(self.time_ns),
            hash=self.block_hash(self.height)))
        self.app.commit(abci.RequestCommit())
        return resp

    def query(self, path: str) -> Any:
        r = self.app.query(abci.RequestQuery(path=path))
        assert r.code == 0, r.log
        return json.loads(r.value)

    def check(self, tx: bytes) -> abci.ResponseCheckTx:
        return self.app.check_tx(abci.RequestCheckTx(tx=tx))

    def balance(self, key: Key) -> int:
        return int(self.query(f"accounts/{key.address.hex()}")["balance"])

    def total_held(self) -> int:
        """sum(balances) + escrow + fee pool + bonds (active, unbonding) + reveal deposits:
        must equal supply (docs/economics.md)."""
        from abci_app.dlbc import state

        st = self.app.store
        s = sum(b for _, b, _ in state.iter_accounts(st))
        return (s + state.get_escrow(st) + state.get_fee_pool(st) + state.get_bonded_total(st)
                + state.get_unbonding_total(st) + state.get_deposits_total(st))

    def fee(self, tx: bytes) -> int:
        """The fee this chain charges for `tx` (economics.tx_fee on its params)."""
        from abci_app.dlbc import economics, state

        return economics.tx_fee(state.get_params(self.app.store), len(tx))

    def close(self) -> None:
        self.app.close()
