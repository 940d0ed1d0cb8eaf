"""application + kvstore called directly: staging discipline, version forms, safe defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.wrappers_pb2 import Int64Value

from abci_app.application import (
    Application,
    is_recheck,
    validator_update_pub_key,
    vote_extensions_enable_height,
)
from abci_app.kvstore import CODE_BAD_SIGNATURE, CODE_ENCODING, KVStoreApplication, sign_tx
from abci_app.pb.tendermint.abci import types_pb2 as abci
from abci_app.pb.tendermint.types import params_pb2


def _finalize(app: Application, height: int, txs: list[bytes]) -> abci.ResponseFinalizeBlock:
    return app.finalize_block(abci.RequestFinalizeBlock(txs=txs, height=height))


def test_kvstore_block_cycle_and_info(tmp_path: Path) -> None:
    app = KVStoreApplication(tmp_path)
    assert app.info(abci.RequestInfo()).last_block_height == 0
    genesis = app.init_chain(abci.RequestInitChain(app_state_bytes=b'{"g": "1"}', initial_height=1))
    assert len(genesis.app_hash) == 32
    resp = _finalize(app, 1, [b"a=1", b"garbage"])
    assert [r.code for r in resp.tx_results] == [0, CODE_ENCODING]
    # FinalizeBlock only stages: nothing committed yet.
    assert app.info(abci.RequestInfo()).last_block_height == 0
    assert app.query(abci.RequestQuery(path="/key", data=b"a")).code != 0
    app.commit(abci.RequestCommit())
    info = app.info(abci.RequestInfo())
    assert (info.last_block_height, info.last_block_app_hash) == (1, resp.app_hash)
    assert app.query(abci.RequestQuery(path="/key", data=b"a")).value == b"1"
    assert app.query(abci.RequestQuery(path="/key", data=b"g")).value == b"1"
    app.close()


def test_refinalize_same_height_replaces_previous_attempt(tmp_path: Path) -> None:
    a = KVStoreApplication(tmp_path / "a")
    b = KVStoreApplication(tmp_path / "b")
    for app in (a, b):
        app.init_chain(abci.RequestInitChain())
    _finalize(a, 1, [b"x=wrong"])  # e.g. CometBFT restarted before Commit
    ra = _finalize(a, 1, [b"y=2"])
    rb = _finalize(b, 1, [b"y=2"])
    assert ra.app_hash == rb.app_hash
    a.commit(abci.RequestCommit())
    assert a.query(abci.RequestQuery(data=b"x")).code != 0
    a.close()
    b.close()


def test_empty_app_state_from_cometbft_init_is_accepted(tmp_path: Path) -> None:
    app = KVStoreApplication(tmp_path)
    assert len(app.init_chain(abci.RequestInitChain(app_state_bytes=b"")).app_hash) == 32
    app.close()


def test_invalid_finalize_wrong_height(tmp_path: Path) -> None:
    app = KVStoreApplication(tmp_path)
    app.init_chain(abci.RequestInitChain())
    _finalize(app, 1, [])
    app.commit(abci.RequestCommit())
    with pytest.raises(RuntimeError, match="height 3"):
        _finalize(app, 3, [])
    app.close()


def test_invalid_signed_tx_rejected_in_check_tx(tmp_path: Path) -> None:
    app = KVStoreApplication(tmp_path)
    key = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
    good = sign_tx(key, b"s=1")
    assert app.check_tx(abci.RequestCheckTx(tx=good)).code == 0
    forged = good[:-1] + b"2"
    resp = app.check_tx(abci.RequestCheckTx(tx=forged))
    assert resp.code == CODE_BAD_SIGNATURE and "signature" in resp.log
    app.close()


def test_v1_check_tx_recheck_in_field_3() -> None:
    assert is_recheck(abci.RequestCheckTx(type=abci.RECHECK))
    assert is_recheck(abci.RequestCheckTx(type_v1=abci.CHECK_TX_TYPE_RECHECK))
    assert not is_recheck(abci.RequestCheckTx(type_v1=abci.CHECK_TX_TYPE_CHECK))
    assert not is_recheck(abci.RequestCheckTx())


def test_make_validator_update_follows_negotiated_version() -> None:
    app = Application()
    pub = bytes(range(32))
    app.info(abci.RequestInfo(abci_version="2.0.0"))
    old = app.make_validator_update(pub, 5)
    assert old.pub_key.ed25519 == pub and not old.pub_key_bytes
    app.info(abci.RequestInfo(abci_version="2.1.0"))
    new = app.make_validator_update(pub, 5)
    assert (new.pub_key_bytes, new.pub_key_type) == (pub, "ed25519")
    assert not new.HasField("pub_key")
    assert validator_update_pub_key(old) == validator_update_pub_key(new) == pub


def test_vote_extensions_enable_height_either_form() -> None:
    v038 = params_pb2.ConsensusParams(abci=params_pb2.ABCIParams(vote_extensions_enable_height=3))
    v1 = params_pb2.ConsensusParams(
        feature=params_pb2.FeatureParams(vote_extensions_enable_height=Int64Value(value=4)))
    assert vote_extensions_enable_height(v038) == 3
    assert vote_extensions_enable_height(v1) == 4
    assert vote_extensions_enable_height(params_pb2.ConsensusParams()) == 0


def test_base_application_safe_defaults() -> None:
    app = Application()
    assert app.process_proposal(abci.RequestProcessProposal()).status == \
        abci.ResponseProcessProposal.ACCEPT
    prep = app.prepare_proposal(abci.RequestPrepareProposal(max_tx_bytes=5, txs=[b"abc", b"def"]))
    assert list(prep.txs) == [b"abc"]
    assert len(app.finalize_block(abci.RequestFinalizeBlock(txs=[b"a", b"b"])).tx_results) == 2
    assert app.offer_snapshot(abci.RequestOfferSnapshot()).result == \
        abci.ResponseOfferSnapshot.REJECT


def test_committed_view_sees_genesis_before_first_commit(tmp_path: Path) -> None:
    app = KVStoreApplication(tmp_path)
    app.init_chain(abci.RequestInitChain(app_state_bytes=b'{"g": "1"}'))
    assert app.committed_view().get(b"kv/g") == b"1"
    assert app.store.get(b"kv/g") is None  # not persisted until block 1 commits
    _finalize(app, 1, [b"a=1"])
    assert app.committed_view().get(b"kv/a") is None  # the finalizing block is invisible
    app.commit(abci.RequestCommit())
    assert app.committed_view().get(b"kv/a") == b"1"
    app.close()
