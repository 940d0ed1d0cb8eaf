"""driver: CometBFT's call sequence over real sockets to real `python -m abci_app` processes."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest

from abci_app.abci_client import AbciClient, AbciClientError
from abci_app.dlbc import crypto
from abci_app.dlbc.crypto import (
    sign_vote_extension,
    verify_vote_extension,
    vote_extension_sign_bytes,
)
from abci_app.keyfile import KeyFileError, KeyPair, load_key, save_key
from abci_app.kvstore import KVStoreApplication
from abci_app.pb.tendermint.abci import types_pb2 as abci
from abci_app.pb.tendermint.types import validator_pb2
from dlbc_ops.devnode.driver import Driver, ProposalRejected
from dlbc_ops.devnode.validator_key import ValidatorKey
from tests.abci_app.helpers import app_supervisor, block_time, running, spawn_app, txs_for

CHAIN = "dlbc-test"


def _keys(n: int) -> list[ValidatorKey]:
    return [ValidatorKey.generate(b"val-%d" % i) for i in range(n)]


def test_four_app_processes_agree_for_55_heights(tmp_path: Path) -> None:
    """Handshake and 55 heights on 4 real app processes: identical app hashes every height."""
    addrs = [f"unix://{tmp_path}/a{i}.sock" for i in range(4)]
    sup = app_supervisor(tmp_path)
    for i in range(4):
        spawn_app(sup, tmp_path / f"home{i}", addrs[i])
    try:
        async def main() -> list[bytes]:
            driver = Driver([AbciClient(a) for a in addrs], _keys(4), CHAIN,
                            app_state=b'{"genesis": "yes"}', block_store_dir=tmp_path / "blocks")
            assert await driver.handshake() == 0
            hashes = []
            proposers = set()
            for h in range(1, 56):
                res = await driver.run_height(txs_for(h), block_time(h))
                assert res.height == h
                assert len(set(res.app_hashes)) == 1, f"app hashes diverged at {h}"
                assert res.txs == txs_for(h)[:2]  # PrepareProposal dropped the garbage tx
                assert all(len(r) == 2 and r[0].code == 0 for r in res.tx_results)
                proposers.add(res.proposer)
                hashes.append(res.app_hash)
            assert proposers == {0, 1, 2, 3}  # round-robin
            assert len(set(hashes)) == 55  # state changes every height
            q = await driver.query("/key", b"k7")
            assert (q.code, q.value, q.height) == (0, b"v7", 55)
            assert (await driver.query("/key", b"genesis")).value == b"yes"
            bad = await driver.check_tx(b"no-equals")
            assert bad.code != 0 and bad.log
            await driver.close()
            return hashes

        asyncio.run(main())
    finally:
        sup.stop()


class _Recorder(KVStoreApplication):
    """kvstore that records what the driver sends (in-process, to inspect the requests)."""

    def __init__(self, home: Path) -> None:
        super().__init__(home)
        self.prepare: list[abci.RequestPrepareProposal] = []
        self.finalize: list[abci.RequestFinalizeBlock] = []
        self.calls: list[str] = []

    def prepare_proposal(self, req: abci.RequestPrepareProposal) -> abci.ResponsePrepareProposal:
        self.calls.append("prepare")
        self.prepare.append(req)
        return super().prepare_proposal(req)

    def process_proposal(self, req: abci.RequestProcessProposal) -> abci.ResponseProcessProposal:
        self.calls.append("process")
        return super().process_proposal(req)

    def extend_vote(self, req: abci.RequestExtendVote) -> abci.ResponseExtendVote:
        self.calls.append("extend")
        return super().extend_vote(req)

    def verify_vote_extension(self, req: abci.RequestVerifyVoteExtension) -> abci.ResponseVerifyVoteExtension:
        self.calls.append("verify")
        return super().verify_vote_extension(req)

    def finalize_block(self, req: abci.RequestFinalizeBlock) -> abci.ResponseFinalizeBlock:
        self.calls.append("finalize")
        self.finalize.append(req)
        return super().finalize_block(req)

    def commit(self, req: abci.RequestCommit) -> abci.ResponseCommit:
        self.calls.append("commit")
        return super().commit(req)


def test_vote_extensions_reach_next_proposer_signed_like_cometbft(tmp_path: Path) -> None:
    keys = _keys(3)
    apps = [_Recorder(tmp_path / f"r{i}") for i in range(3)]
    with running(apps[0]) as s0, running(apps[1]) as s1, running(apps[2]) as s2:
        addrs = [s.server.listen_address for s in (s0, s1, s2)]

        async def main() -> None:
            driver = Driver([AbciClient(a) for a in addrs], keys, CHAIN)
            await driver.handshake()
            for h in range(1, 5):
                await driver.run_height([b"h=%d" % h], block_time(h))
            await driver.close()

        asyncio.run(main())
    # Per height: the proposer saw Prepare, all saw Process/Extend/2 Verify/Finalize/Commit.
    per_height = {"process": 4, "extend": 4, "verify": 8, "finalize": 4, "commit": 4}
    for app in apps:
        for name, count in per_height.items():
            assert app.calls.count(name) == count, (name, app.calls)
        assert app.calls.index("commit") > app.calls.index("finalize") > app.calls.index("extend")
    prepares = sorted((r for a in apps for r in a.prepare), key=lambda r: r.height)
    assert [r.height for r in prepares] == [1, 2, 3, 4]
    assert len(prepares[0].local_last_commit.votes) == 0  # nothing before the first block
    by_address = {k.address: k for k in keys}
    for req in prepares[1:]:
        votes = req.local_last_commit.votes
        assert len(votes) == 3
        for vote in votes:
            key = by_address[vote.validator.address]
            assert vote.validator.power == key.power
            assert vote.block_id_flag == validator_pb2.BLOCK_ID_FLAG_COMMIT
            assert vote.vote_extension == b"kv-ext:%d" % (req.height - 1)
            assert verify_vote_extension(
                key.pub_key, vote.extension_signature, vote.vote_extension, req.height - 1, 0, CHAIN)
            # A signature for another chain or height must not verify.
            assert not verify_vote_extension(
                key.pub_key, vote.extension_signature, vote.vote_extension, req.height, 0, CHAIN)
    fin = apps[0].finalize[1]
    assert fin.height == 2 and len(fin.decided_last_commit.votes) == 3
    assert fin.proposer_address in by_address and len(fin.hash) == 32


def test_vote_extension_sign_bytes_layout() -> None:
    raw = vote_extension_sign_bytes(b"ext", 5, 0, "c")
    # uvarint length, then CanonicalVoteExtension{1: "ext", 2: sfixed64 5, 3: sfixed64 0, 4: "c"};
    # proto3 omits the zero round.
    body = b"\x0a\x03ext" + b"\x11" + (5).to_bytes(8, "little") + b"\x22\x01c"
    assert raw == bytes([len(body)]) + body


class _Rejecter(KVStoreApplication):
    def process_proposal(self, req: abci.RequestProcessProposal) -> abci.ResponseProcessProposal:
        if any(tx.startswith(b"evil") for tx in req.txs):
            return abci.ResponseProcessProposal(status=abci.ResponseProcessProposal.REJECT)
        return super().process_proposal(req)


def test_invalid_proposal_rejected_is_reported_and_not_finalized(tmp_path: Path) -> None:
    with running(KVStoreApplication(tmp_path / "a")) as s0, running(_Rejecter(tmp_path / "b")) as s1:
        addrs = [s0.server.listen_address, s1.server.listen_address]

        async def main() -> None:
            driver = Driver([AbciClient(a) for a in addrs], _keys(2), CHAIN)
            await driver.handshake()
            await driver.run_height([b"ok=1"], block_time(1))
            with pytest.raises(ProposalRejected) as info:
                await driver.run_height([b"evil=1"], block_time(2))
            assert info.value.rejecting == [1]
            assert driver.height == 1
            res = await driver.run_height([b"ok=2"], block_time(2))
            assert res.height == 2 and len(set(res.app_hashes)) == 1
            await driver.close()

        asyncio.run(main())


def test_validator_key_file_round_trip(tmp_path: Path) -> None:
    key = ValidatorKey.generate(b"seed")
    assert ValidatorKey.generate(b"seed").pub_key == key.pub_key  # deterministic
    path = tmp_path / "priv_validator_key.json"
    key.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["address"] == key.address.hex().upper()
    assert data["pub_key"]["type"] == "tendermint/PubKeyEd25519"
    loaded = ValidatorKey.load(path)
    assert loaded.address == key.address
    assert loaded.sign(b"m") == key.sign(b"m")  # ed25519 is deterministic
    assert "priv" not in repr(loaded)
    # One key-file format: what the driver writes is an account key file, and back.
    assert load_key(path).address == key.address
    other = tmp_path / "acct.json"
    save_key(other, KeyPair.from_seed(b"\x07" * 32))
    assert ValidatorKey.load(other, power=3).pub_key == KeyPair.from_seed(b"\x07" * 32).public_key
    with pytest.raises(KeyFileError, match="already exists"):
        key.save(path)  # a validator key is never silently replaced
    ValidatorKey.generate(b"other").save(path, overwrite=True)
    assert ValidatorKey.load(path).address == ValidatorKey.generate(b"other").address


def test_invalid_validator_key_file(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_text(json.dumps({"priv_key": {"type": "tendermint/PrivKeySecp256k1", "value": ""}}))
    with pytest.raises(ValueError, match="PrivKeySecp256k1"):
        ValidatorKey.load(path)
    good = ValidatorKey.generate(b"v").key.to_json_dict()
    good["address"] = "00" * 20
    path.write_text(json.dumps(good))
    with pytest.raises(KeyFileError, match="does not match"):
        ValidatorKey.load(path)


def test_driver_extension_signatures_are_the_chains() -> None:
    """The driver signs with crypto.sign_vote_extension and re-exports crypto's check and
    sign bytes, so a signature it makes is exactly one the DLBC Settle check accepts."""
    key = ValidatorKey.generate(b"x")
    sig = sign_vote_extension(key, b"ext", 9, 1, CHAIN)
    assert sig == key.sign(vote_extension_sign_bytes(b"ext", 9, 1, CHAIN))
    assert crypto.verify_vote_extension(key.pub_key, sig, b"ext", 9, 1, CHAIN)
    assert verify_vote_extension(key.pub_key, sig, b"ext", 9, 1, CHAIN)
    assert not verify_vote_extension(key.pub_key, sig, b"ext", 9, 0, CHAIN)
    assert not verify_vote_extension(key.pub_key, sig, b"ext", 9, 1, CHAIN + "x")
    assert key.address == crypto.address_of(key.pub_key) == key.key.address


def test_invalid_client_to_dead_address(tmp_path: Path) -> None:
    async def main() -> None:
        with pytest.raises(AbciClientError):
            await AbciClient(f"unix://{tmp_path}/nobody.sock").connect(timeout=0.3)

    asyncio.run(main())


def test_handshake_replay_exposes_the_replayed_results(tmp_path: Path) -> None:
    """A fresh app behind a driver with stored blocks is replayed to the tip; the replayed
    FinalizeBlock responses come back (`Driver.replayed`) equal to the live ones, and every
    executed height's result can be rebuilt from the block store (`Driver.stored_result`)."""
    keys = _keys(1)
    blocks = tmp_path / "blocks"
    with running(KVStoreApplication(tmp_path / "live")) as s:
        async def live() -> list[list[int]]:
            d = Driver([AbciClient(s.server.listen_address)], keys, CHAIN, block_store_dir=blocks)
            await d.handshake()
            assert d.replayed == []  # nothing to replay on a fresh chain
            out = [[r.code for r in (await d.run_height(txs_for(h), block_time(h))).tx_results[0]]
                   for h in range(1, 4)]
            stored = d.stored_result(2)
            assert stored is not None and stored.replayed_app == 0 and stored.proposer == 0
            assert stored.txs == txs_for(2)[:2] and [r.code for r in stored.tx_results[0]] == [0, 0]
            assert stored.vote_extensions == [b"kv-ext:2"]  # kvstore's extension at height 2
            assert d.stored_result(4) is None  # never executed
            await d.close()
            return out

        live_codes = asyncio.run(live())
    with running(KVStoreApplication(tmp_path / "fresh")) as s:
        async def replay() -> None:
            d = Driver([AbciClient(s.server.listen_address)], keys, CHAIN, block_store_dir=blocks)
            assert await d.handshake() == 3
            assert [(r.height, r.replayed_app) for r in d.replayed] == [(1, 0), (2, 0), (3, 0)]
            for r, codes in zip(d.replayed, live_codes, strict=True):
                assert [t.code for t in r.tx_results[0]] == codes
                assert r.app_hash == d.store.app_hash(r.height)
                assert len(r.events) == 1 and r.txs == txs_for(r.height)[:2]
            await d.close()

        asyncio.run(replay())
