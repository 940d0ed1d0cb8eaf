"""The devnet's round tracker (dlbc_ops/devnet/watch.py) on the answers a pipelined chain gives:
each phase change seen once, each close reported once and in order, whatever the polls miss."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from dlbc_ops.devnet.history import History
from dlbc_ops.devnet.narration import Narrator, describe_schedule
from dlbc_ops.devnet.watch import RoundTracker


def rec(n: int, phase: str) -> dict[str, Any]:
    """A `rounds/active` entry as the app writes it (the fields the tracker and narrator read)."""
    return {"round": n, "phase": phase, "status": "active", "task_id": 10 + n, "seed": "ab" * 32,
            "start_ns": 0, "train_end_ns": 0, "reveal_end_ns": 0, "verify_end_ns": 0,
            "commitments": [], "revealed": []}


def phases(obs: Any) -> list[tuple[int, str]]:
    return [(r["round"], r["phase"]) for r in obs.phases]


def test_pipelined_rounds_are_followed_side_by_side() -> None:
    t = RoundTracker()
    assert phases(t.observe([rec(1, "TRAIN")])) == [(1, "TRAIN")]
    obs = t.observe([rec(1, "TRAIN"), rec(2, "ANNOUNCED")])
    assert phases(obs) == [(2, "ANNOUNCED")] and obs.closed == []
    obs = t.observe([rec(1, "REVEAL"), rec(2, "TRAIN")])
    assert phases(obs) == [(1, "REVEAL"), (2, "TRAIN")]
    assert [r["round"] for r in obs.active] == [1, 2]
    obs = t.observe([rec(2, "TRAIN"), rec(1, "VERIFY")])  # any order in, oldest first out
    assert phases(obs) == [(1, "VERIFY")]
    obs = t.observe([rec(2, "TRAIN"), rec(3, "ANNOUNCED")])
    assert obs.closed == [1] and phases(obs) == [(3, "ANNOUNCED")]
    t.reported(1)
    assert t.observe([rec(2, "TRAIN"), rec(3, "ANNOUNCED")]).closed == []
    assert t.closed_count == 1


def test_closes_missed_between_polls_are_reported_in_order() -> None:
    t = RoundTracker()
    t.observe([rec(1, "TRAIN")])
    # rounds 1 and 2 closed, 3 trains and 4 is announced: both closes, oldest first
    obs = t.observe([rec(3, "TRAIN"), rec(4, "ANNOUNCED")])
    assert obs.closed == [1, 2]
    t.reported(1)  # round 2's query failed: it comes back on the next poll, and only it
    assert t.observe([rec(3, "TRAIN"), rec(4, "ANNOUNCED")]).closed == [2]
    t.reported(2)
    # the chain went idle: nothing active, the `round` query says 4 was the newest
    assert t.observe([], newest=4).closed == [3, 4]


def test_rounds_closed_before_the_first_poll_are_not_counted() -> None:
    """A resumed devnet: rounds 1-6 closed in an earlier run."""
    t = RoundTracker()
    obs = t.observe([rec(7, "VERIFY"), rec(8, "TRAIN")])
    assert obs.closed == [] and t.baseline == 6
    assert t.observe([rec(8, "REVEAL")]).closed == [7]
    idle = RoundTracker()
    assert idle.observe([], newest=5).closed == [] and idle.baseline == 5
    assert idle.observe([rec(6, "TRAIN")]).closed == []


def test_narrator_names_the_rounds_beside_a_phase(tmp_path: Path) -> None:
    out = io.StringIO()
    n = Narrator(out, History(tmp_path / "h.json"))
    active = [rec(3, "REVEAL"), rec(4, "TRAIN"), rec(5, "ANNOUNCED")]
    n.phase(active[1], active)
    n.phase(active[2], active)
    lines = out.getvalue().splitlines()
    assert "round 4: phase TRAIN (~0s), task 14" in lines[0]
    assert lines[0].endswith("beside round 3 in REVEAL, round 5 in ANNOUNCED")
    assert "round 5: phase ANNOUNCED (TRAIN in ~0s), task 15" in lines[1]


def test_narrator_records_the_training_times_of_a_commit(tmp_path: Path) -> None:
    out = io.StringIO()
    h = History(tmp_path / "h.json")
    n = Narrator(out, h)
    n.on_event("committed", {"round": 2, "miner": "ab" * 20, "epochs": 7,
                             "watermark_confidence": 1.0, "step_seconds": 50.25,
                             "train_seconds": 55.5, "train_started_ns": 10, "train_ended_ns": 20,
                             "checkpoint_dir": "/x", "epoch_elapsed": [1.0, 2.0]})
    assert "7 epoch(s), 55.5 s training (50.2 s in optimizer steps)" in out.getvalue()
    assert h.snapshot() == [{"round": 2, "miner": "ab" * 6, "epochs": 7,
                             "watermark_confidence": 1.0, "step_seconds": 50.25,
                             "train_seconds": 55.5, "train_started_ns": 10,
                             "train_ended_ns": 20}]


def test_describe_schedule() -> None:
    phases_ = {"train_seconds": 60, "reveal_seconds": 12, "verify_seconds": 30}
    assert describe_schedule({**phases_, "rounds_in_flight": 2}).startswith(
        "rounds: pipelined (TRAIN 60 s, REVEAL 12 s, VERIFY 30 s)")
    # the stored form leaves rounds_in_flight out at its default, 1
    assert describe_schedule(phases_).startswith("rounds: sequential")


def test_narrator_records_why_a_miner_skipped_a_round(tmp_path: Path) -> None:
    h = History(tmp_path / "h.json")
    n = Narrator(io.StringIO(), h)
    n.names["ab" * 20] = "miner-2"
    n.on_event("round_skipped", {"round": 5, "miner": "ab" * 20,
                                 "reason": "budget too small for one epoch"})
    n.on_event("round_skipped", {"round": 5, "role": "verifier", "reason": "no reveals"})
    assert h.snapshot() == [{"round": 5, "miner": "miner-2",
                             "skipped": "budget too small for one epoch"}]
