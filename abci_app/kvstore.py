"""A small real example app (like CometBFT's kvstore): `key=value` txs, state in `Store`.

It exists so the foundation (server, store, driver) is tested end to end without the DLBC
state machine. Tx forms:
  * plain:  b"key=value"                                    (key non-empty, no b"=" in key)
  * signed: b"\\x01" || ed25519 pub (32) || sig (64) || b"key=value"
            sig = Ed25519(priv, b"kvstore/tx/v1" || b"key=value")  -- the bench's signed tx
One validity path serves CheckTx, PrepareProposal, ProcessProposal and FinalizeBlock (STYLE).

Test hook (never set in production): env ``ABCI_KVSTORE_HANG_AT=<phase>:<height>`` with phase in
``finalize`` | ``commit`` | ``commit_after`` makes the app sleep inside that call at that height
so a test can SIGKILL it there; it first creates ``<home>/HANGING`` so the test knows when.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from abci_app.application import BlockResult, StatefulApplication, is_recheck
from abci_app.dlbc.crypto import Signer, private_key_of, public_key_bytes, verify_ed25519
from abci_app.pb.tendermint.abci import types_pb2 as abci
from abci_app.store import View

# Result codes (one place, STYLE).
CODE_OK = 0
CODE_ENCODING = 1
CODE_BAD_SIGNATURE = 2
CODE_UNKNOWN_PATH = 3
CODE_NOT_FOUND = 4

SIGNED_TX_TAG = 0x01
SIGN_DOMAIN = b"kvstore/tx/v1"
MAX_TX_BYTES = 64 * 1024
_KEY_PREFIX = b"kv/"
_META_TXCOUNT = b"meta/txcount"


class InvalidTx(Exception):
    def __init__(self, code: int, log: str) -> None:
        super().__init__(log)
        self.code = code
        self.log = log


def sign_tx(signer: Signer, body: bytes) -> bytes:
    """Build a signed kvstore tx (`signer`: an Ed25519PrivateKey or a keyfile.KeyPair)."""
    sig = private_key_of(signer).sign(SIGN_DOMAIN + body)
    return bytes([SIGNED_TX_TAG]) + public_key_bytes(signer) + sig + body


def parse_tx(tx: bytes) -> tuple[bytes, bytes]:
    """Stateless check: return (key, value) or raise InvalidTx."""
    if not tx:
        raise InvalidTx(CODE_ENCODING, "empty tx")
    if len(tx) > MAX_TX_BYTES:
        raise InvalidTx(CODE_ENCODING, f"tx of {len(tx)} bytes exceeds {MAX_TX_BYTES}")
    body = tx
    if tx[0] == SIGNED_TX_TAG:
        if len(tx) < 1 + 32 + 64:
            raise InvalidTx(CODE_ENCODING, "signed tx shorter than its header")
        pub, sig, body = tx[1:33], tx[33:97], tx[97:]
        # The DLBC verification rule (strict encodings, libsodium when installed), so the
        # example app accepts the same signatures as the real one and no small-order forgery.
        if not verify_ed25519(pub, sig, SIGN_DOMAIN + body):
            raise InvalidTx(CODE_BAD_SIGNATURE, "bad ed25519 signature")
    key, sep, value = body.partition(b"=")
    if not sep or not key:
        raise InvalidTx(CODE_ENCODING, "tx must be key=value with a non-empty key")
    return key, value


def is_valid_tx(tx: bytes) -> bool:
    """`parse_tx` as a predicate: the one validity path PrepareProposal and ProcessProposal
    share with CheckTx and FinalizeBlock (STYLE)."""
    try:
        parse_tx(tx)
    except InvalidTx:
        return False
    return True


#: The test hook's environment variable (see the module docstring).
HANG_AT_ENV = "ABCI_KVSTORE_HANG_AT"


def _hang_target() -> tuple[str, int] | None:
    spec = os.environ.get(HANG_AT_ENV, "")
    if not spec:
        return None
    phase, _, height = spec.partition(":")
    return phase, int(height)


class KVStoreApplication(StatefulApplication):
    version = "kvstore-0.1.0"

    def __init__(self, home: Path) -> None:
        super().__init__(home)
        self._hang = _hang_target()

    def _maybe_hang(self, phase: str, height: int) -> None:
        if self._hang == (phase, height):
            if self.home is not None:
                (self.home / "HANGING").write_text(f"{phase}:{height}\n")
            time.sleep(3600)

    # state transition ----------------------------------------------------------------------
    def genesis(self, view: View, req: abci.RequestInitChain) -> abci.ResponseInitChain | None:
        # Accept the empty app_state that `cometbft init` writes, or a JSON object of strings.
        import json

        raw = req.app_state_bytes.strip()
        if raw:
            state = json.loads(raw)
            if not isinstance(state, dict):
                raise ValueError("kvstore app_state must be a JSON object")
            for key in sorted(state):
                view.set(_KEY_PREFIX + key.encode(), str(state[key]).encode())
        return None

    def execute_block(self, view: View, req: abci.RequestFinalizeBlock) -> BlockResult:
        self._maybe_hang("finalize", req.height)
        results: list[abci.ExecTxResult] = []
        count = int(view.get(_META_TXCOUNT) or b"0")
        for tx in req.txs:
            layer = view.child()
            try:
                key, value = parse_tx(tx)
            except InvalidTx as exc:
                results.append(abci.ExecTxResult(code=exc.code, log=exc.log))
                continue
            layer.set(_KEY_PREFIX + key, value)
            layer.write_through()
            count += 1
            results.append(
                abci.ExecTxResult(
                    code=CODE_OK,
                    events=[
                        abci.Event(
                            type="app",
                            attributes=[
                                abci.EventAttribute(key="key", value=key.decode("utf-8", "replace"), index=True),
                            ],
                        )
                    ],
                )
            )
        view.set(_META_TXCOUNT, str(count).encode())
        return BlockResult(tx_results=results)

    def before_commit(self, height: int) -> None:
        self._maybe_hang("commit", height)

    def commit(self, req: abci.RequestCommit) -> abci.ResponseCommit:
        height = self._pending[0] if self._pending else 0
        resp = super().commit(req)
        self._maybe_hang("commit_after", height)
        return resp

    # mempool / proposals ----------------------------------------------------------------------
    def check_tx(self, req: abci.RequestCheckTx) -> abci.ResponseCheckTx:
        try:
            parse_tx(req.tx)
        except InvalidTx as exc:
            return abci.ResponseCheckTx(code=exc.code, log=exc.log)
        return abci.ResponseCheckTx(code=CODE_OK, gas_wanted=1, info="recheck" if is_recheck(req) else "")

    def prepare_proposal(self, req: abci.RequestPrepareProposal) -> abci.ResponsePrepareProposal:
        out: list[bytes] = []
        total = 0
        for tx in req.txs:
            if not is_valid_tx(tx):
                continue
            if req.max_tx_bytes > 0 and total + len(tx) > req.max_tx_bytes:
                break
            total += len(tx)
            out.append(tx)
        return abci.ResponsePrepareProposal(txs=out)

    def process_proposal(self, req: abci.RequestProcessProposal) -> abci.ResponseProcessProposal:
        ok = all(is_valid_tx(tx) for tx in req.txs)
        return abci.ResponseProcessProposal(
            status=abci.ResponseProcessProposal.ACCEPT if ok else abci.ResponseProcessProposal.REJECT
        )

    def extend_vote(self, req: abci.RequestExtendVote) -> abci.ResponseExtendVote:
        return abci.ResponseExtendVote(vote_extension=b"kv-ext:%d" % req.height)

    def verify_vote_extension(
        self, req: abci.RequestVerifyVoteExtension
    ) -> abci.ResponseVerifyVoteExtension:
        ok = req.vote_extension == b"kv-ext:%d" % req.height
        status = (
            abci.ResponseVerifyVoteExtension.ACCEPT if ok else abci.ResponseVerifyVoteExtension.REJECT
        )
        return abci.ResponseVerifyVoteExtension(status=status)

    # queries ------------------------------------------------------------------------------------
    def query(self, req: abci.RequestQuery) -> abci.ResponseQuery:
        height = self.store.last_height
        if req.path in ("", "/key", "/store"):
            value = self.store.get(_KEY_PREFIX + req.data)
            if value is None:
                return abci.ResponseQuery(code=CODE_NOT_FOUND, key=req.data, log="does not exist", height=height)
            return abci.ResponseQuery(code=CODE_OK, key=req.data, value=value, log="exists", height=height)
        if req.path == "/txcount":
            return abci.ResponseQuery(code=CODE_OK, value=self.store.get(_META_TXCOUNT) or b"0", height=height)
        return abci.ResponseQuery(code=CODE_UNKNOWN_PATH, log=f"unknown query path {req.path!r}", height=height)
