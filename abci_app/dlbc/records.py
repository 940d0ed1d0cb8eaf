"""The chain <-> sidecar contract as typed records: tasks, rounds, reveals, verification
results, winners; the `Phase` of a round; the integer kinds of the protocol (docs/rounds.md,
docs/transactions.md, docs/settlement.md).

Why one module: these records are stored as canonical JSON under `task/<id>`, `round/<n>` and
`reveal/<n>/<addr>` (state.py), answered as JSON by the ABCI `query` (query.py) and read back by
the sidecars and the CLI. Defining each once, as a frozen slotted dataclass with ONE codec
(`to_json() -> dict`, `to_bytes()` canonical, `from_json(bytes | dict)`), keeps the writer and
every reader of a field in step; before, a field existed only as a key in a dict literal.

State bytes feed the app hash, so `to_json` must produce exactly the keys and value forms the
chain has always stored (the golden test replays a recorded chain to prove it): bytes as lower
hex, absent values as null, and the two late keys (`Task.forfeit`, `Round.verdicts`) left out
until they exist. `from_json` ignores keys it does not know: a query answer carries more
(`RoundInfo`), and a reader must not break when the chain adds a field.

Records are immutable: a transition builds the next version with `dataclasses.replace` and
stores it (`state.put_task` / `put_round`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NewType

Address = NewType("Address", bytes)
"""20-byte account / validator address: SHA-256(ed25519 public key)[:20] (crypto.address_of)."""
Amount = NewType("Amount", int)
"""Tokens, in the chain's smallest unit (balances are u128 in state)."""
TaskId = NewType("TaskId", int)
RoundNo = NewType("RoundNo", int)
Height = NewType("Height", int)
"""CometBFT block height."""


class Phase(StrEnum):
    """The phase of a round (docs/rounds.md), as stored and as the `round` query answers it.

    TRAIN → REVEAL → VERIFY on BFT time, DONE once closed; IDLE is only the `round` query's
    answer before the first round (no record has it). With pipelined rounds a round starts
    ANNOUNCED: its task is fixed and its encrypted data can be fetched, its TRAIN (and the key)
    comes at `start_ns`."""

    ANNOUNCED = "ANNOUNCED"
    TRAIN = "TRAIN"
    REVEAL = "REVEAL"
    VERIFY = "VERIFY"
    DONE = "DONE"
    IDLE = "IDLE"


class RoundStatus(StrEnum):
    ACTIVE = "active"
    CLOSED = "closed"


class Outcome(StrEnum):
    """Why a round closed (rounds.py, settle.py)."""

    SETTLED = "settled"
    NO_WINNER = "no_winner"
    NO_REVEAL = "no_reveal"
    UNSETTLED = "unsettled"
    KEY_WITHHELD = "key_withheld"
    TEST_KEY_WITHHELD = "test_key_withheld"
    PUBLISHER_FAULT = "publisher_fault"


class TaskStatus(StrEnum):
    PENDING = "pending"
    SELECTED = "selected"
    DONE = "done"
    REFUNDED = "refunded"
    FORFEITED = "forfeited"


class VerdictStatus(StrEnum):
    """What the validators decided about one revealed model (settle.py step 3)."""

    CONFIRMED = "confirmed"
    REFUTED = "refuted"
    UNDECIDED = "undecided"


def canonical_json(obj: Any) -> bytes:
    """One byte string per value: sorted keys, no spaces (state bytes feed the app hash)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _obj(data: bytes | dict[str, Any]) -> dict[str, Any]:
    """The object behind a record. Bytes are the chain's own canonical writes (`to_bytes`), whose
    shape the record types fix (at most 3 levels; user JSON such as hyperparams is stored as a
    string, after `wire.parse_json_object` bounded it), so no recursion limit is in reach.
    Untrusted JSON (RPC answers) is parsed by its reader, which passes the dict."""
    if isinstance(data, dict):
        return data
    obj = json.loads(data)
    if not isinstance(obj, dict):
        raise ValueError("a record must be a JSON object")  # noqa: TRY004
    return obj


def _hex_or_none(b: bytes | None) -> str | None:
    return None if b is None else b.hex()


def _bytes_or_none(text: str | None) -> bytes | None:
    return None if text is None else bytes.fromhex(text)


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What a publisher asks to have trained (docs/transactions.md), checked by
    process.validate_task_spec; the SubmitTask payload and the `spec` of a stored task."""

    architecture: str
    hyperparams_json: str
    model_size_bytes: int
    flops_per_sample: int
    data_uri: str
    data_size_bytes: int
    data_sha256: bytes
    data_key_sha256: bytes
    test_uri: str
    test_sha256: bytes
    test_key_sha256: bytes
    metric: str
    min_score_ppm: int
    input_shape: tuple[int, ...]
    num_classes: int
    num_samples: int

    def to_json(self) -> dict[str, Any]:
        """The stored `spec` object (state bytes: keys and value forms must never change)."""
        return {
            "architecture": self.architecture, "hyperparams_json": self.hyperparams_json,
            "model_size_bytes": self.model_size_bytes, "flops_per_sample": self.flops_per_sample,
            "data_uri": self.data_uri, "data_size_bytes": self.data_size_bytes,
            "data_sha256": self.data_sha256.hex(), "data_key_sha256": self.data_key_sha256.hex(),
            "test_uri": self.test_uri, "test_sha256": self.test_sha256.hex(),
            "test_key_sha256": self.test_key_sha256.hex(), "metric": self.metric,
            "min_score_ppm": self.min_score_ppm, "input_shape": list(self.input_shape),
            "num_classes": self.num_classes, "num_samples": self.num_samples,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> TaskSpec:
        return cls(
            architecture=obj["architecture"], hyperparams_json=obj["hyperparams_json"],
            model_size_bytes=obj["model_size_bytes"], flops_per_sample=obj["flops_per_sample"],
            data_uri=obj["data_uri"], data_size_bytes=obj["data_size_bytes"],
            data_sha256=bytes.fromhex(obj["data_sha256"]),
            data_key_sha256=bytes.fromhex(obj["data_key_sha256"]),
            test_uri=obj["test_uri"], test_sha256=bytes.fromhex(obj["test_sha256"]),
            test_key_sha256=bytes.fromhex(obj["test_key_sha256"]), metric=obj["metric"],
            min_score_ppm=obj["min_score_ppm"], input_shape=tuple(obj["input_shape"]),
            num_classes=obj["num_classes"], num_samples=obj["num_samples"],
        )


@dataclass(frozen=True, slots=True)
class Forfeit:
    """How a forfeited task's escrow was paid out (economics.pay_publisher_fault)."""

    round: RoundNo
    miners: tuple[Address, ...]
    share: Amount
    to_fee_pool: Amount

    def to_json(self) -> dict[str, Any]:
        return {"round": self.round, "miners": [a.hex() for a in self.miners],
                "share": self.share, "to_fee_pool": self.to_fee_pool}

    @classmethod
    def from_json(cls, data: bytes | dict[str, Any]) -> Forfeit:
        obj = _obj(data)
        return cls(RoundNo(obj["round"]), tuple(Address(bytes.fromhex(a)) for a in obj["miners"]),
                   Amount(obj["share"]), Amount(obj["to_fee_pool"]))


@dataclass(frozen=True, slots=True)
class Task:
    """A submitted task (`task/<id>`, query `tasks/<id>`)."""

    id: TaskId
    publisher: Address
    spec: TaskSpec
    reward: Amount
    status: TaskStatus
    returned: int  # times a round without winner sent it back to the pool (at most once)
    rounds: tuple[RoundNo, ...]
    submitted_height: Height
    size_bytes: int  # model + data size (Eq. 2)
    flops: int  # flops_per_sample * num_samples (Eq. 3)
    train_key: bytes | None
    test_key: bytes | None
    winner: Address | None
    forfeit: Forfeit | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "publisher": self.publisher.hex(), "spec": self.spec.to_json(),
            "reward": self.reward, "status": self.status.value, "returned": self.returned,
            "rounds": list(self.rounds), "submitted_height": self.submitted_height,
            "size_bytes": self.size_bytes, "flops": self.flops,
            "train_key": _hex_or_none(self.train_key), "test_key": _hex_or_none(self.test_key),
            "winner": _hex_or_none(self.winner),
        }
        if self.forfeit is not None:
            out["forfeit"] = self.forfeit.to_json()
        return out

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, data: bytes | dict[str, Any]) -> Task:
        obj = _obj(data)
        winner = obj["winner"]
        forfeit = obj.get("forfeit")
        return cls(
            id=TaskId(obj["id"]), publisher=Address(bytes.fromhex(obj["publisher"])),
            spec=TaskSpec.from_json(obj["spec"]), reward=Amount(obj["reward"]),
            status=TaskStatus(obj["status"]), returned=obj["returned"],
            rounds=tuple(RoundNo(n) for n in obj["rounds"]),
            submitted_height=Height(obj["submitted_height"]), size_bytes=obj["size_bytes"],
            flops=obj["flops"], train_key=_bytes_or_none(obj["train_key"]),
            test_key=_bytes_or_none(obj["test_key"]),
            winner=None if winner is None else Address(bytes.fromhex(winner)),
            forfeit=None if forfeit is None else Forfeit.from_json(forfeit),
        )

    @property
    def in_escrow(self) -> bool:
        """Its reward is still held by the chain (not paid, refunded or forfeited yet)."""
        return self.status in (TaskStatus.PENDING, TaskStatus.SELECTED)


@dataclass(frozen=True, slots=True)
class Reveal:
    """A miner's RevealModel as stored (`reveal/<n>/<addr>`; the round query's `revealed`)."""

    miner: Address
    model_uri: str
    model_digest: bytes
    claimed_score_ppm: int
    height: Height  # block of the reveal: the earlier reveal wins a tie (settle.py step 4)
    checkpoint_digests: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        return {"miner": self.miner.hex(), "model_uri": self.model_uri,
                "model_digest": self.model_digest.hex(),
                "claimed_score_ppm": self.claimed_score_ppm, "height": self.height,
                "checkpoint_digests": [d.hex() for d in self.checkpoint_digests]}

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, data: bytes | dict[str, Any]) -> Reveal:
        obj = _obj(data)
        return cls(Address(bytes.fromhex(obj["miner"])), obj["model_uri"],
                   bytes.fromhex(obj["model_digest"]), obj["claimed_score_ppm"],
                   Height(obj["height"]),
                   tuple(bytes.fromhex(d) for d in obj["checkpoint_digests"]))


@dataclass(frozen=True, slots=True)
class ModelVerdict:
    """The validators' decision on one revealed model (settle.py steps 3-4), kept in the round
    record as `verdicts`. Not to be confused with `verdicts.Verdict`, one validator's finding
    (the vote-extension entry), of which this is the power-weighted tally."""

    miner: Address
    status: VerdictStatus
    verified_score_ppm: int
    confirm_power: int
    refute_power: int

    def to_json(self) -> dict[str, Any]:
        return {"miner": self.miner.hex(), "status": self.status.value,
                "verified_score_ppm": self.verified_score_ppm,
                "confirm_power": self.confirm_power, "refute_power": self.refute_power}

    @classmethod
    def from_json(cls, data: bytes | dict[str, Any]) -> ModelVerdict:
        obj = _obj(data)
        return cls(Address(bytes.fromhex(obj["miner"])), VerdictStatus(obj["status"]),
                   obj["verified_score_ppm"], obj["confirm_power"], obj["refute_power"])


@dataclass(frozen=True, slots=True)
class Winner:
    """The settled round's winning model and what it was paid (Eq. 5-6, rewards.py)."""

    miner: Address
    model_digest: bytes
    model_uri: str
    claimed_score_ppm: int
    verified_score_ppm: int
    checkpoint_digests: tuple[bytes, ...]
    task_reward: Amount
    block_reward_miner: Amount
    block_reward_publisher: Amount

    def to_json(self) -> dict[str, Any]:
        return {"miner": self.miner.hex(), "model_digest": self.model_digest.hex(),
                "model_uri": self.model_uri, "claimed_score_ppm": self.claimed_score_ppm,
                "verified_score_ppm": self.verified_score_ppm,
                "checkpoint_digests": [d.hex() for d in self.checkpoint_digests],
                "task_reward": self.task_reward, "block_reward_miner": self.block_reward_miner,
                "block_reward_publisher": self.block_reward_publisher}

    @classmethod
    def from_json(cls, data: bytes | dict[str, Any]) -> Winner:
        obj = _obj(data)
        return cls(
            Address(bytes.fromhex(obj["miner"])), bytes.fromhex(obj["model_digest"]),
            obj["model_uri"], obj["claimed_score_ppm"], obj["verified_score_ppm"],
            tuple(bytes.fromhex(d) for d in obj["checkpoint_digests"]),
            Amount(obj["task_reward"]), Amount(obj["block_reward_miner"]),
            Amount(obj["block_reward_publisher"]))


@dataclass(frozen=True, slots=True)
class Round:
    """One round of the schedule (`round/<n>`; rounds.py writes it, settle.py closes it)."""

    round: RoundNo
    task_id: TaskId
    publisher: Address
    status: RoundStatus
    phase: Phase
    outcome: Outcome | None
    start_height: Height
    end_height: Height | None
    start_ns: int
    train_end_ns: int
    reveal_end_ns: int
    verify_end_ns: int
    seed: bytes  # hash of the block that created (started or announced) the round: the watermark seed
    queue_len: int  # l of Eq. 1 and 5 when the round started
    ranking_score_e18: int
    publisher_share_ppm: int  # Eq. 5, fixed at the start of the round
    key_released: bool
    test_key_revealed: bool
    winner: Winner | None
    reveals: int
    verify_height: Height | None  # first block in VERIFY
    verdicts: tuple[ModelVerdict, ...] | None = None  # set by the Settle

    @property
    def is_active(self) -> bool:
        return self.status is RoundStatus.ACTIVE

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "round": self.round, "task_id": self.task_id, "publisher": self.publisher.hex(),
            "status": self.status.value, "phase": self.phase.value,
            "outcome": None if self.outcome is None else self.outcome.value,
            "start_height": self.start_height, "end_height": self.end_height,
            "start_ns": self.start_ns, "train_end_ns": self.train_end_ns,
            "reveal_end_ns": self.reveal_end_ns, "verify_end_ns": self.verify_end_ns,
            "seed": self.seed.hex(), "queue_len": self.queue_len,
            "ranking_score_e18": self.ranking_score_e18,
            "publisher_share_ppm": self.publisher_share_ppm, "key_released": self.key_released,
            "test_key_revealed": self.test_key_revealed,
            "winner": None if self.winner is None else self.winner.to_json(),
            "reveals": self.reveals, "verify_height": self.verify_height,
        }
        if self.verdicts is not None:
            out["verdicts"] = [v.to_json() for v in self.verdicts]
        return out

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, data: bytes | dict[str, Any]) -> Round:
        obj = _obj(data)
        outcome, winner, verdicts = obj["outcome"], obj["winner"], obj.get("verdicts")
        end_height, verify_height = obj["end_height"], obj["verify_height"]
        return cls(
            round=RoundNo(obj["round"]), task_id=TaskId(obj["task_id"]),
            publisher=Address(bytes.fromhex(obj["publisher"])),
            status=RoundStatus(obj["status"]), phase=Phase(obj["phase"]),
            outcome=None if outcome is None else Outcome(outcome),
            start_height=Height(obj["start_height"]),
            end_height=None if end_height is None else Height(end_height),
            start_ns=obj["start_ns"], train_end_ns=obj["train_end_ns"],
            reveal_end_ns=obj["reveal_end_ns"], verify_end_ns=obj["verify_end_ns"],
            seed=bytes.fromhex(obj["seed"]), queue_len=obj["queue_len"],
            ranking_score_e18=obj["ranking_score_e18"],
            publisher_share_ppm=obj["publisher_share_ppm"], key_released=obj["key_released"],
            test_key_revealed=obj["test_key_revealed"],
            winner=None if winner is None else Winner.from_json(winner),
            reveals=obj["reveals"],
            verify_height=None if verify_height is None else Height(verify_height),
            verdicts=None if verdicts is None else tuple(ModelVerdict.from_json(v)
                                                         for v in verdicts),
        )


@dataclass(frozen=True, slots=True)
class Commitment:
    """A CommitModel as the round query lists it."""

    miner: Address
    commitment: bytes

    def to_json(self) -> dict[str, Any]:
        return {"miner": self.miner.hex(), "commitment": self.commitment.hex()}

    @classmethod
    def from_json(cls, data: bytes | dict[str, Any]) -> Commitment:
        obj = _obj(data)
        return cls(Address(bytes.fromhex(obj["miner"])), bytes.fromhex(obj["commitment"]))


@dataclass(frozen=True, slots=True)
class RoundInfo:
    """The answer of the `round` / `rounds/<n>` query: the round record, flat, plus what the
    round holds besides it (query.py). Before the first round the `round` query answers
    `{"round": 0, "phase": "IDLE", "last_block_time_ns"}` instead (`is_idle_answer`)."""

    record: Round
    unselected: tuple[TaskId, ...]
    commitments: tuple[Commitment, ...]
    revealed: tuple[Reveal, ...]
    last_block_time_ns: int

    def to_json(self) -> dict[str, Any]:
        out = self.record.to_json()
        out["unselected"] = list(self.unselected)
        out["commitments"] = [c.to_json() for c in self.commitments]
        out["revealed"] = [r.to_json() for r in self.revealed]
        out["last_block_time_ns"] = self.last_block_time_ns
        return out

    @classmethod
    def from_json(cls, data: bytes | dict[str, Any]) -> RoundInfo:
        obj = _obj(data)
        return cls(Round.from_json(obj), tuple(TaskId(i) for i in obj["unselected"]),
                   tuple(Commitment.from_json(c) for c in obj["commitments"]),
                   tuple(Reveal.from_json(r) for r in obj["revealed"]),
                   obj["last_block_time_ns"])


def idle_answer(last_block_time_ns: int) -> dict[str, Any]:
    """The `round` query's answer before the first round started."""
    return {"round": 0, "phase": Phase.IDLE.value, "last_block_time_ns": last_block_time_ns}


def is_idle_answer(obj: dict[str, Any]) -> bool:
    return obj.get("round") == 0


__all__ = [
    "Address",
    "Amount",
    "Commitment",
    "Forfeit",
    "Height",
    "ModelVerdict",
    "Outcome",
    "Phase",
    "Reveal",
    "Round",
    "RoundInfo",
    "RoundNo",
    "RoundStatus",
    "Task",
    "TaskId",
    "TaskSpec",
    "TaskStatus",
    "VerdictStatus",
    "Winner",
    "canonical_json",
    "idle_answer",
    "is_idle_answer",
]
