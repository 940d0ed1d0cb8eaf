"""The typed chain records (abci_app/dlbc/records.py) against the bytes the chain stores.

The stored JSON feeds the app hash, so each record must encode to exactly the canonical bytes the
chain wrote when records were dict literals (the golden test proves it over a whole chain; these
pin each record's shape), decode back to an equal value, and read the query answers that carry
more keys than the record (`RoundInfo`).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from abci_app.dlbc.records import (
    Address,
    Amount,
    Commitment,
    Forfeit,
    Height,
    ModelVerdict,
    Outcome,
    Phase,
    Reveal,
    Round,
    RoundInfo,
    RoundNo,
    RoundStatus,
    Task,
    TaskId,
    TaskSpec,
    TaskStatus,
    VerdictStatus,
    Winner,
    canonical_json,
    idle_answer,
    is_idle_answer,
)

A = Address(b"\xaa" * 20)
B = Address(b"\xbb" * 20)
D = b"\xdd" * 32

SPEC_JSON = {
    "architecture": "cnn", "hyperparams_json": '{"width": 8}', "model_size_bytes": 10,
    "flops_per_sample": 3, "data_uri": "file:///d", "data_size_bytes": 20,
    "data_sha256": "01" * 32, "data_key_sha256": "02" * 32, "test_uri": "file:///t",
    "test_sha256": "03" * 32, "test_key_sha256": "04" * 32, "metric": "accuracy",
    "min_score_ppm": 500_000, "input_shape": [1, 8, 8], "num_classes": 10, "num_samples": 100,
}
TASK_JSON = {
    "id": 7, "publisher": A.hex(), "spec": SPEC_JSON, "reward": 10_000, "status": "selected",
    "returned": 1, "rounds": [2, 3], "submitted_height": 5, "size_bytes": 30, "flops": 300,
    "train_key": "05" * 32, "test_key": None, "winner": None,
}
REVEAL_JSON = {"miner": B.hex(), "model_uri": "https://m/x", "model_digest": D.hex(),
               "claimed_score_ppm": 900_000, "height": 12, "checkpoint_digests": ["06" * 32]}
WINNER_JSON = {"miner": B.hex(), "model_digest": D.hex(), "model_uri": "https://m/x",
               "claimed_score_ppm": 900_000, "verified_score_ppm": 899_000,
               "checkpoint_digests": ["06" * 32], "task_reward": 10_000,
               "block_reward_miner": 250, "block_reward_publisher": 750}
ROUND_JSON = {
    "round": 3, "task_id": 7, "publisher": A.hex(), "status": "closed", "phase": "DONE",
    "outcome": "settled", "start_height": 10, "end_height": 20, "start_ns": 1, "train_end_ns": 2,
    "reveal_end_ns": 3, "verify_end_ns": 4, "seed": "ab" * 32, "queue_len": 5,
    "ranking_score_e18": 123, "publisher_share_ppm": 750_000, "key_released": True,
    "test_key_revealed": True, "winner": WINNER_JSON, "reveals": 1, "verify_height": 15,
    "verdicts": [{"miner": B.hex(), "status": "confirmed", "verified_score_ppm": 899_000,
                  "confirm_power": 30, "refute_power": 0}],
}


@pytest.mark.parametrize("cls,obj", [(Task, TASK_JSON), (Reveal, REVEAL_JSON),
                                     (Winner, WINNER_JSON), (Round, ROUND_JSON)])
def test_record_round_trips_to_the_same_canonical_bytes(cls: type, obj: dict) -> None:
    rec = cls.from_json(canonical_json(obj))
    assert canonical_json(rec.to_json()) == canonical_json(obj)
    assert cls.from_json(rec.to_json()) == rec


def test_task_fields_are_typed() -> None:
    task = Task.from_json(TASK_JSON)
    assert task.publisher == A and task.status is TaskStatus.SELECTED
    assert task.train_key == b"\x05" * 32 and task.test_key is None and task.forfeit is None
    assert task.spec.data_sha256 == b"\x01" * 32 and task.spec.input_shape == (1, 8, 8)
    assert task.rounds == (2, 3) and task.in_escrow
    assert isinstance(task.spec, TaskSpec)


def test_task_forfeit_key_appears_only_once_forfeited() -> None:
    task = Task.from_json(TASK_JSON)
    assert "forfeit" not in task.to_json()
    gone = replace(task, status=TaskStatus.FORFEITED,
                   forfeit=Forfeit(RoundNo(3), (A, B), Amount(5_000), Amount(1)))
    assert gone.to_json()["forfeit"] == {"round": 3, "miners": [A.hex(), B.hex()],
                                         "share": 5_000, "to_fee_pool": 1}
    assert Task.from_json(gone.to_bytes()) == gone and not gone.in_escrow


def test_round_verdicts_key_appears_only_after_settle() -> None:
    rec = Round.from_json(ROUND_JSON)
    assert rec.phase is Phase.DONE and rec.outcome is Outcome.SETTLED
    assert rec.status is RoundStatus.CLOSED and not rec.is_active
    assert rec.verdicts == (ModelVerdict(B, VerdictStatus.CONFIRMED, 899_000, 30, 0),)
    assert rec.winner is not None and rec.winner.block_reward_publisher == 750
    active = replace(rec, status=RoundStatus.ACTIVE, phase=Phase.VERIFY, outcome=None,
                     winner=None, verdicts=None, end_height=None)
    assert "verdicts" not in active.to_json() and active.to_json()["outcome"] is None


def test_round_info_reads_the_round_query_answer() -> None:
    answer = dict(ROUND_JSON, unselected=[8, 9], last_block_time_ns=99,
                  commitments=[{"miner": B.hex(), "commitment": "07" * 32}],
                  revealed=[REVEAL_JSON])
    info = RoundInfo.from_json(answer)
    assert info.record == Round.from_json(ROUND_JSON)
    assert info.unselected == (TaskId(8), TaskId(9)) and info.last_block_time_ns == 99
    assert info.commitments == (Commitment(B, b"\x07" * 32),)
    assert info.revealed == (Reveal.from_json(REVEAL_JSON),)
    assert info.revealed[0].height == Height(12)
    assert canonical_json(info.to_json()) == canonical_json(answer)


def test_idle_answer_is_what_the_round_query_says_before_round_one() -> None:
    idle = idle_answer(5)
    assert idle == {"round": 0, "phase": "IDLE", "last_block_time_ns": 5}
    assert is_idle_answer(idle) and not is_idle_answer(ROUND_JSON)


def test_phase_values_are_the_stored_strings() -> None:
    assert [p.value for p in Phase] == ["ANNOUNCED", "TRAIN", "REVEAL", "VERIFY", "DONE", "IDLE"]
    assert Phase("VERIFY") is Phase.VERIFY and f"{Phase.TRAIN}" == "TRAIN"


def test_invalid_record_from_non_object_json() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        Round.from_json(b"[1, 2]")
