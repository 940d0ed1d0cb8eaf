"""Building, encoding, decoding and stateless checking of DLBC transactions (docs/transactions.md).

This is the protobuf edge of the state machine (with `extensions.py` for vote extensions):
`decode_tx` checks the canonical envelope and hands back a `messages.DecodedTx` whose `msg` is a
frozen dataclass (messages.py), so no `process_<msg>` ever sees a protobuf message. Building
txs stays protobuf-based here, for the sidecars, tools and tests that make them.

Public contract (miner/publisher CLIs and tests use these):

    build_signed_tx(signer, chain_id, nonce, msg) -> bytes
        `signer` is an Ed25519PrivateKey or abci_app.keyfile.KeyPair; `msg` is one of the
        dlbc.v1 messages below (build them with the helpers or `tx_pb2.<Msg>(...)`).
    transfer(to, amount) / register_miner(bandwidth_bps, flops) / unbond_miner()
    submit_task(spec, reward)
    task_spec(...) / release_train_key(task_id, key) / commit_model(round, commitment)
    reveal_test_set(task_id, test_key) / reveal_model(round, model_uri, model_digest, salt,
        claimed_score_ppm, checkpoint_digests)
    build_settle_tx(round, extended_commit_info) -> bytes     (proposer only, unsigned)
    model_commitment(model_digest, miner_address, salt) = SHA-256(digest ‖ address ‖ salt)
    key_commitment(key) = SHA-256(key)   (data_key_sha256 and test_key_sha256 of a TaskSpec)
    decode_tx(raw, chain_id, max_tx_bytes) -> messages.DecodedTx   (or InvalidTx)

Test set convention: the publisher encrypts the test `.npz` with AES-256-GCM (the same chunked
format as training data) under `test_key`, publishes it at `spec.test_uri` with digest
`spec.test_sha256`, and commits `spec.test_key_sha256 = SHA-256(test_key)`; in REVEAL it sends
`RevealTestSet{task_id, test_key}`, which the chain checks against the commitment.

The nonce of a tx is the sender account's current `nonce` (query `accounts/<addr>`); it
increments with every accepted tx.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence

from google.protobuf.message import Message

from abci_app.dlbc import messages as m
from abci_app.dlbc.codes import Code, InvalidTx
from abci_app.dlbc.crypto import (
    PUB_KEY_LEN,
    SIGNATURE_LEN,
    Signer,
    address_of,
    public_key_bytes,
    sign_tx_body,
    verify_tx_body,
)
from abci_app.dlbc.messages import DecodedTx
from abci_app.dlbc.records import Address, Amount, RoundNo, TaskId
from abci_app.dlbc.wire import WireError, parse_canonical
from abci_app.pb.dlbc.v1 import tx_pb2
from abci_app.pb.tendermint.abci import types_pb2 as abci_pb2

#: The stateless size bound of a Settle: `settle.max_settle_bytes` at the largest allowed
#: `max_reveals_per_round` (process_settle checks the chain's own, smaller bound).
MAX_SETTLE_BYTES = 32 + 150 * (4 + 2 + 22 + 11 + 4 + 66 + 2 + 16 + 512 * 67)

# oneof field name of TxBody for each message type
MSG_FIELD: dict[type[Message], str] = {
    tx_pb2.Transfer: "transfer",
    tx_pb2.RegisterMiner: "register_miner",
    tx_pb2.SubmitTask: "submit_task",
    tx_pb2.ReleaseTrainKey: "release_train_key",
    tx_pb2.CommitModel: "commit_model",
    tx_pb2.RevealTestSet: "reveal_test_set",
    tx_pb2.RevealModel: "reveal_model",
    tx_pb2.Settle: "settle",
    tx_pb2.UnbondMiner: "unbond_miner",
}


def model_commitment(model_digest: bytes, miner_address: bytes, salt: bytes) -> bytes:
    """CommitModel.commitment (docs/transactions.md): binds the model to its miner before anyone
    reveals."""
    return hashlib.sha256(model_digest + miner_address + salt).digest()


def key_commitment(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def build_signed_tx(signer: Signer, chain_id: str, nonce: int, msg: Message) -> bytes:
    field = MSG_FIELD.get(type(msg))
    if field is None or field == "settle":
        raise TypeError(f"not a signable DLBC message: {type(msg).__name__}")
    body = tx_pb2.TxBody(chain_id=chain_id, nonce=nonce)
    getattr(body, field).CopyFrom(msg)
    body_bytes: bytes = body.SerializeToString()
    raw: bytes = tx_pb2.SignedTx(
        body=body_bytes, public_key=public_key_bytes(signer),
        signature=sign_tx_body(signer, body_bytes),
    ).SerializeToString()
    return raw


def build_settle_tx(round_: int, extended_commit: abci_pb2.ExtendedCommitInfo) -> bytes:
    """The unsigned Settle envelope the proposer injects (docs/settlement.md)."""
    body = tx_pb2.TxBody(settle=tx_pb2.Settle(round=round_, extended_commit=extended_commit))
    raw: bytes = tx_pb2.SignedTx(body=body.SerializeToString()).SerializeToString()
    return raw


def transfer(to: bytes, amount: int) -> tx_pb2.Transfer:
    return tx_pb2.Transfer(to=to, amount=amount)


def register_miner(bandwidth_bps: int, flops: int) -> tx_pb2.RegisterMiner:
    return tx_pb2.RegisterMiner(bandwidth_bps=bandwidth_bps, flops=flops)


def task_spec(*, architecture: str, hyperparams_json: str = "{}", model_size_bytes: int,
              flops_per_sample: int, data_uri: str, data_size_bytes: int, data_sha256: bytes,
              data_key_sha256: bytes, test_uri: str, test_sha256: bytes,
              test_key_sha256: bytes, metric: str, min_score_ppm: int,
              input_shape: Sequence[int], num_classes: int, num_samples: int) -> tx_pb2.TaskSpec:
    return tx_pb2.TaskSpec(
        architecture=architecture, hyperparams_json=hyperparams_json,
        model_size_bytes=model_size_bytes, flops_per_sample=flops_per_sample,
        data_uri=data_uri, data_size_bytes=data_size_bytes, data_sha256=data_sha256,
        data_key_sha256=data_key_sha256, test_uri=test_uri, test_sha256=test_sha256,
        test_key_sha256=test_key_sha256, metric=metric, min_score_ppm=min_score_ppm,
        input_shape=list(input_shape), num_classes=num_classes, num_samples=num_samples,
    )


def unbond_miner() -> tx_pb2.UnbondMiner:
    return tx_pb2.UnbondMiner()


def submit_task(spec: tx_pb2.TaskSpec, reward: int) -> tx_pb2.SubmitTask:
    return tx_pb2.SubmitTask(spec=spec, reward=reward)


def release_train_key(task_id: int, key: bytes) -> tx_pb2.ReleaseTrainKey:
    return tx_pb2.ReleaseTrainKey(task_id=task_id, key=key)


def commit_model(round_: int, commitment: bytes) -> tx_pb2.CommitModel:
    return tx_pb2.CommitModel(round=round_, commitment=commitment)


def reveal_test_set(task_id: int, test_key: bytes) -> tx_pb2.RevealTestSet:
    return tx_pb2.RevealTestSet(task_id=task_id, test_key=test_key)


def reveal_model(round_: int, model_uri: str, model_digest: bytes, salt: bytes,
                 claimed_score_ppm: int, checkpoint_digests: Sequence[bytes] = ()
                 ) -> tx_pb2.RevealModel:
    return tx_pb2.RevealModel(round=round_, model_uri=model_uri, model_digest=model_digest,
                              salt=salt, claimed_score_ppm=claimed_score_ppm,
                              checkpoint_digests=list(checkpoint_digests))


class DecodedTxCache:
    """Successful `decode_tx` results of *signed* txs, keyed by the raw tx bytes.

    A tx is decoded at CheckTx, again at every recheck, at PrepareProposal, ProcessProposal and
    FinalizeBlock; the answer is a pure function of (raw bytes, chain id, max_tx_bytes), so
    the later calls reuse the first one's (protobuf parsing, signature-cache lookup, address).
    Only successes are kept, each with the chain id and size limit it was checked against
    (a hit under other values is a miss). Bounded by count and by raw bytes held (a tx is
    pinned with its parsed message, so 64 KiB txs must not fill memory); oldest out first.
    Lookups are lock-free dict reads; inserts take a lock (apps served on several threads of
    one process share the cache).
    Clearing `crypto.verify_tx_body` clears this too: a cached decode carries a verified
    signature, and a cold replay must verify again.
    """

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[bytes, tuple[str, int, DecodedTx]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, raw: bytes, chain_id: str, max_tx_bytes: int) -> DecodedTx | None:
        hit = self._items.get(raw)
        if hit is not None and hit[0] == chain_id and hit[1] == max_tx_bytes:
            return hit[2]
        return None

    def put(self, raw: bytes, chain_id: str, max_tx_bytes: int, tx: DecodedTx) -> None:
        if len(raw) > self.max_bytes:
            return
        with self._lock:
            items = self._items
            old = items.pop(raw, None)
            if old is not None:
                self._bytes -= len(raw)
            items[raw] = (chain_id, max_tx_bytes, tx)
            self._bytes += len(raw)
            while len(items) > self.max_entries or self._bytes > self.max_bytes:
                key, _ = items.popitem(last=False)
                self._bytes -= len(key)

    def __len__(self) -> int:
        return len(self._items)

    def cache_clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


decoded_txs = DecodedTxCache(max_entries=50_000, max_bytes=16 << 20)
verify_tx_body.on_clear(decoded_txs.cache_clear)


def decode_tx(raw: bytes, chain_id: str, max_tx_bytes: int) -> DecodedTx:
    """Stateless stage (STYLE: tower-abci stages): size, shape, chain id, signature.

    Memoised for signed txs that pass (`DecodedTxCache`); failures are recomputed each time."""
    hit = decoded_txs.get(raw, chain_id, max_tx_bytes)
    if hit is not None:
        return hit
    tx = _decode_tx(raw, chain_id, max_tx_bytes)
    if tx.kind != "settle":
        decoded_txs.put(raw, chain_id, max_tx_bytes, tx)
    return tx


def _decode_tx(raw: bytes, chain_id: str, max_tx_bytes: int) -> DecodedTx:
    # Verify size (a Settle carries every validator's verdicts: it has its own, larger bound)
    if len(raw) > max(max_tx_bytes, MAX_SETTLE_BYTES):
        raise InvalidTx(Code.TX_TOO_LARGE, f"tx is {len(raw)} bytes, max is {max_tx_bytes}")
    # Verify the envelope decodes
    # (canonical encoding, no unknown field: the bytes say exactly what the fields say,
    # wire.parse_canonical; no padding, no second encoding of one tx)
    try:
        signed = parse_canonical(tx_pb2.SignedTx, raw)
        body = parse_canonical(tx_pb2.TxBody, signed.body)
    except WireError as e:
        raise InvalidTx(Code.MALFORMED_TX, f"tx {e}") from None
    kind = body.WhichOneof("msg")
    if kind is None:
        raise InvalidTx(Code.EMPTY_MSG, "TxBody carries no message")
    msg = getattr(body, kind)
    if kind == "settle":
        # Verify an unsigned envelope: Settle is authenticated by the validators' signatures
        if signed.public_key or signed.signature or body.chain_id or body.nonce:
            raise InvalidTx(Code.SIGNED_SETTLE,
                            "Settle must carry no public key, signature, chain id or nonce")
        return DecodedTx(msg=to_message(kind, msg), sender=Address(b""), nonce=0)
    if len(raw) > max_tx_bytes:
        raise InvalidTx(Code.TX_TOO_LARGE, f"tx is {len(raw)} bytes, max is {max_tx_bytes}")
    # Verify the chain id (replay across chains)
    if body.chain_id != chain_id:
        raise InvalidTx(Code.WRONG_CHAIN_ID,
                        f"tx is for chain {body.chain_id!r}, this is {chain_id!r}")
    # Verify the signature
    if len(signed.public_key) != PUB_KEY_LEN:
        raise InvalidTx(Code.BAD_PUBLIC_KEY, f"public key must be {PUB_KEY_LEN} bytes")
    if len(signed.signature) != SIGNATURE_LEN or not verify_tx_body(
            signed.public_key, signed.body, signed.signature):
        raise InvalidTx(Code.BAD_SIGNATURE, "ed25519 signature does not verify over the tx body")
    return DecodedTx(msg=to_message(kind, msg), sender=address_of(signed.public_key),
                     nonce=body.nonce)


# ------------------------------------------------------------ protobuf -> frozen dataclasses


def to_task_spec(spec: tx_pb2.TaskSpec) -> m.TaskSpec:
    return m.TaskSpec(
        architecture=spec.architecture, hyperparams_json=spec.hyperparams_json,
        model_size_bytes=spec.model_size_bytes, flops_per_sample=spec.flops_per_sample,
        data_uri=spec.data_uri, data_size_bytes=spec.data_size_bytes,
        data_sha256=bytes(spec.data_sha256), data_key_sha256=bytes(spec.data_key_sha256),
        test_uri=spec.test_uri, test_sha256=bytes(spec.test_sha256),
        test_key_sha256=bytes(spec.test_key_sha256), metric=spec.metric,
        min_score_ppm=spec.min_score_ppm, input_shape=tuple(spec.input_shape),
        num_classes=spec.num_classes, num_samples=spec.num_samples)


def to_settle(msg: tx_pb2.Settle) -> m.Settle:
    ec = msg.extended_commit
    votes = tuple(m.SettleVote(validator=bytes(v.validator.address), power=v.validator.power,
                               block_id_flag=v.block_id_flag,
                               vote_extension=bytes(v.vote_extension),
                               extension_signature=bytes(v.extension_signature))
                  for v in ec.votes)
    return m.Settle(round=RoundNo(msg.round), commit_round=ec.round, votes=votes,
                    encoded_bytes=msg.ByteSize())


def to_message(kind: str, msg: Message) -> m.Msg:
    """The frozen dataclass of a decoded TxBody message (`kind` is its oneof name)."""
    if isinstance(msg, tx_pb2.Transfer):
        return m.Transfer(to=bytes(msg.to), amount=Amount(msg.amount))
    if isinstance(msg, tx_pb2.RegisterMiner):
        return m.RegisterMiner(bandwidth_bps=msg.bandwidth_bps, flops=msg.flops)
    if isinstance(msg, tx_pb2.UnbondMiner):
        return m.UnbondMiner()
    if isinstance(msg, tx_pb2.SubmitTask):
        return m.SubmitTask(spec=to_task_spec(msg.spec), reward=Amount(msg.reward))
    if isinstance(msg, tx_pb2.ReleaseTrainKey):
        return m.ReleaseTrainKey(task_id=TaskId(msg.task_id), key=bytes(msg.key))
    if isinstance(msg, tx_pb2.CommitModel):
        return m.CommitModel(round=RoundNo(msg.round), commitment=bytes(msg.commitment))
    if isinstance(msg, tx_pb2.RevealTestSet):
        return m.RevealTestSet(task_id=TaskId(msg.task_id), test_key=bytes(msg.test_key))
    if isinstance(msg, tx_pb2.RevealModel):
        return m.RevealModel(round=RoundNo(msg.round), model_uri=msg.model_uri,
                             model_digest=bytes(msg.model_digest), salt=bytes(msg.salt),
                             claimed_score_ppm=msg.claimed_score_ppm,
                             checkpoint_digests=tuple(bytes(d) for d in msg.checkpoint_digests))
    if isinstance(msg, tx_pb2.Settle):
        return to_settle(msg)
    raise TypeError(f"TxBody.{kind} has no DLBC message type")  # a schema change missed here
