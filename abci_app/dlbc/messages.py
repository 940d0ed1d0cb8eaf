"""The DLBC transactions as frozen data (docs/transactions.md): what `decode_tx` returns.

Why a second copy of the `dlbc.v1` messages: protobuf stays at the edge. `txs.decode_tx` parses
the canonical protobuf envelope once and converts it into these plain, slotted, immutable
values, so every `process_<msg>` reads typed attributes (bytes are `bytes`, repeated fields are
tuples) and the state machine never imports protobuf (STYLE §1, h11's frozen events). Field
names and meanings are the protobuf schema's (`abci_app/proto/dlbc/v1/tx.proto`); building and
encoding txs stays protobuf-based in `txs.py`.

`TaskSpec` (the SubmitTask payload) lives in records.py: it is also the `spec` of the stored
task record, and its JSON form is state bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from abci_app.dlbc.records import Address, Amount, RoundNo, TaskId, TaskSpec


@dataclass(frozen=True, slots=True)
class Transfer:
    KIND: ClassVar[str] = "transfer"
    to: bytes  # 20 bytes once process_transfer has checked it
    amount: Amount


@dataclass(frozen=True, slots=True)
class RegisterMiner:
    KIND: ClassVar[str] = "register_miner"
    bandwidth_bps: int
    flops: int


@dataclass(frozen=True, slots=True)
class UnbondMiner:
    KIND: ClassVar[str] = "unbond_miner"


@dataclass(frozen=True, slots=True)
class SubmitTask:
    KIND: ClassVar[str] = "submit_task"
    spec: TaskSpec
    reward: Amount


@dataclass(frozen=True, slots=True)
class ReleaseTrainKey:
    KIND: ClassVar[str] = "release_train_key"
    task_id: TaskId
    key: bytes


@dataclass(frozen=True, slots=True)
class CommitModel:
    KIND: ClassVar[str] = "commit_model"
    round: RoundNo
    commitment: bytes


@dataclass(frozen=True, slots=True)
class RevealTestSet:
    KIND: ClassVar[str] = "reveal_test_set"
    task_id: TaskId
    test_key: bytes


@dataclass(frozen=True, slots=True)
class RevealModel:
    KIND: ClassVar[str] = "reveal_model"
    round: RoundNo
    model_uri: str
    model_digest: bytes
    salt: bytes
    claimed_score_ppm: int
    checkpoint_digests: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class SettleVote:
    """One entry of the Settle's ExtendedCommitInfo (CometBFT's ExtendedVoteInfo), decoded.

    Nothing here is trusted: settle.collect_reports checks the address against state, the
    signature against the validator's key, and ignores `power` (state has the real one)."""

    validator: bytes
    power: int
    block_id_flag: int
    vote_extension: bytes
    extension_signature: bytes


@dataclass(frozen=True, slots=True)
class Settle:
    """The proposer-injected settlement of `round` with the votes of the commit
    (docs/settlement.md)."""

    KIND: ClassVar[str] = "settle"
    round: RoundNo
    commit_round: int  # the CometBFT round of the commit that carries the extensions
    votes: tuple[SettleVote, ...]
    encoded_bytes: int  # size of the protobuf Settle message (its bound is chain-specific)


Msg = (Transfer | RegisterMiner | UnbondMiner | SubmitTask | ReleaseTrainKey | CommitModel
       | RevealTestSet | RevealModel | Settle)


@dataclass(frozen=True, slots=True)
class DecodedTx:
    """A tx that passed the stateless checks: well formed, signed, for this chain."""

    msg: Msg
    sender: Address  # b"" for Settle
    nonce: int

    @property
    def kind(self) -> str:
        """The TxBody oneof name of the message, e.g. "transfer" (tx outcomes carry it)."""
        return self.msg.KIND


__all__ = [
    "CommitModel",
    "DecodedTx",
    "Msg",
    "RegisterMiner",
    "ReleaseTrainKey",
    "RevealModel",
    "RevealTestSet",
    "Settle",
    "SettleVote",
    "SubmitTask",
    "TaskSpec",
    "Transfer",
    "UnbondMiner",
]
