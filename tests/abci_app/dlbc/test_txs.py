"""`txs.decode_tx` hands the state machine frozen dataclasses, never protobuf (messages.py).

Every message built with the `txs` helpers decodes to its dataclass with typed fields (bytes as
`bytes`, repeated fields as tuples, the signer's address as sender); a Settle carries its votes
decoded. Rejections keep their codes.
"""

from __future__ import annotations

import dataclasses

import pytest

from abci_app.dlbc import messages as m
from abci_app.dlbc import txs
from abci_app.dlbc.codes import Code, InvalidTx
from abci_app.dlbc.txs import decode_tx

from .helpers import CHAIN_ID, Key, extended_commit, spec_for, verdict_set

ALICE = Key("alice")
MAX = 65_536


def decode(msg: object) -> m.DecodedTx:
    return decode_tx(ALICE.tx(msg, nonce=3), CHAIN_ID, MAX)


def test_decode_tx_transfer_is_a_frozen_dataclass() -> None:
    tx = decode(txs.transfer(b"\x01" * 20, 5))
    assert tx.msg == m.Transfer(to=b"\x01" * 20, amount=5)
    assert tx.kind == "transfer" and tx.sender == ALICE.address and tx.nonce == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        tx.msg.amount = 6


def test_decode_tx_every_message_kind() -> None:
    spec = spec_for("t", train_key=b"k" * 32, test_key=b"s" * 32)
    cases = [
        (txs.register_miner(10, 20), m.RegisterMiner, "register_miner"),
        (txs.unbond_miner(), m.UnbondMiner, "unbond_miner"),
        (txs.submit_task(spec, 100), m.SubmitTask, "submit_task"),
        (txs.release_train_key(4, b"k" * 32), m.ReleaseTrainKey, "release_train_key"),
        (txs.commit_model(2, b"c" * 32), m.CommitModel, "commit_model"),
        (txs.reveal_test_set(4, b"s" * 32), m.RevealTestSet, "reveal_test_set"),
        (txs.reveal_model(2, "https://x/m", b"d" * 32, b"salt", 900_000, [b"e" * 32]),
         m.RevealModel, "reveal_model"),
    ]
    for msg, cls, kind in cases:
        tx = decode(msg)
        assert type(tx.msg) is cls and tx.kind == kind


def test_decode_tx_task_spec_and_reveal_fields_are_typed() -> None:
    spec = spec_for("t", train_key=b"k" * 32, test_key=b"s" * 32)
    sub = decode(txs.submit_task(spec, 100)).msg
    assert isinstance(sub, m.SubmitTask) and sub.reward == 100
    assert sub.spec.input_shape == (1, 8, 8) and sub.spec.data_sha256 == bytes(spec.data_sha256)
    assert sub.spec.to_json()["data_key_sha256"] == txs.key_commitment(b"k" * 32).hex()
    rev = decode(txs.reveal_model(2, "https://x/m", b"d" * 32, b"salt", 900_000,
                                  [b"e" * 32])).msg
    assert rev == m.RevealModel(round=2, model_uri="https://x/m",
                                model_digest=b"d" * 32, salt=b"salt", claimed_score_ppm=900_000,
                                checkpoint_digests=(b"e" * 32,))


def test_decode_tx_settle_carries_the_decoded_votes() -> None:
    val = Key("validator")
    ext = verdict_set(1, [(ALICE.address, b"d" * 32, True, 900_000)])
    raw = txs.build_settle_tx(1, extended_commit([(val, 10)], [ext], height=7, round_=2))
    tx = decode_tx(raw, CHAIN_ID, MAX)
    assert isinstance(tx.msg, m.Settle) and tx.kind == "settle" and tx.sender == b""
    assert tx.msg.round == 1 and tx.msg.commit_round == 2 and tx.msg.encoded_bytes > len(ext)
    (vote,) = tx.msg.votes
    assert vote.validator == val.address and vote.power == 10 and vote.block_id_flag == 2
    assert vote.vote_extension == ext and len(vote.extension_signature) == 64


def test_invalid_decode_tx_wrong_chain_id_keeps_its_code() -> None:
    raw = txs.build_signed_tx(ALICE.priv, "other-chain", 0, txs.unbond_miner())
    with pytest.raises(InvalidTx) as exc:
        decode_tx(raw, CHAIN_ID, MAX)
    assert exc.value.code == Code.WRONG_CHAIN_ID
