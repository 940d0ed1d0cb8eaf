"""Chain records (abci_app/dlbc/records.py) built without a chain, for the verifier's tests and
benchmarks (bench/verifier.py, bench/copy_marks.py), as `hostile_round` is.

The verifier reads these from the `round` and `tasks/<id>` queries; tests and benches build the
same typed values directly. Fields a check does not look at get plain, valid placeholders;
`dataclasses.replace` sets the ones a caller needs.
"""

from __future__ import annotations

from abci_app.dlbc.records import (
    Address,
    Amount,
    Commitment,
    Height,
    Phase,
    Reveal,
    Round,
    RoundInfo,
    RoundNo,
    RoundStatus,
    TaskId,
    TaskSpec,
    Winner,
)


def task_spec(architecture: str, hyperparams_json: str, metric: str) -> TaskSpec:
    """A spec that only names what check_model uses (architecture, hyperparameters, metric)."""
    return TaskSpec(
        architecture=architecture, hyperparams_json=hyperparams_json, model_size_bytes=0,
        flops_per_sample=1, data_uri="file:///data", data_size_bytes=1, data_sha256=b"\0" * 32,
        data_key_sha256=b"\0" * 32, test_uri="file:///test", test_sha256=b"\0" * 32,
        test_key_sha256=b"\0" * 32, metric=metric, min_score_ppm=0, input_shape=(1,),
        num_classes=1, num_samples=1)


def reveal(miner: bytes, model_uri: str, model_digest_hex: str, claimed_score_ppm: int) -> Reveal:
    return Reveal(Address(miner), model_uri, bytes.fromhex(model_digest_hex), claimed_score_ppm,
                  Height(1), ())


def winner(miner: bytes) -> Winner:
    return Winner(Address(miner), b"\0" * 32, "file:///model", 0, 0, (), Amount(0), Amount(0),
                  Amount(0))


def round_info(n: int, seed: bytes, committed: list[bytes], revealed: list[bytes],
               won_by: bytes | None = None) -> RoundInfo:
    """Round n seeded by `seed`, with these committers and revealers (and winner, if any)."""
    rec = Round(
        round=RoundNo(n), task_id=TaskId(1), publisher=Address(b"\1" * 20),
        status=RoundStatus.ACTIVE, phase=Phase.VERIFY, outcome=None, start_height=Height(1),
        end_height=None, start_ns=0, train_end_ns=0, reveal_end_ns=0, verify_end_ns=0,
        seed=seed, queue_len=1, ranking_score_e18=0, publisher_share_ppm=0, key_released=True,
        test_key_revealed=True, winner=None if won_by is None else winner(won_by),
        reveals=len(revealed), verify_height=Height(1))
    return RoundInfo(rec, (), tuple(Commitment(Address(m), b"\0" * 32) for m in committed),
                     tuple(reveal(m, "file:///model", "00" * 32, 0) for m in revealed), 0)
