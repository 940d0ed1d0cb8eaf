"""The devnet's history (OUT/history.json) and narration: what the plots and the operator see."""

from __future__ import annotations

import io
from pathlib import Path

from dlbc_ops.devnet.history import History
from dlbc_ops.devnet.narration import Narrator


def test_record_merges_fields_per_round_and_miner(tmp_path: Path) -> None:
    h = History(tmp_path / "history.json")
    h.record(1, "miner-1", watermark_confidence=0.99, epochs=3)
    h.record(1, "miner-1", claimed_ppm=800_000)
    h.record(1, "miner-2", claimed_ppm=500_000)
    h.mark_winner(1, "miner-1")
    assert h.snapshot() == [
        {"round": 1, "miner": "miner-1", "watermark_confidence": 0.99, "epochs": 3,
         "claimed_ppm": 800_000, "winner": True},
        {"round": 1, "miner": "miner-2", "claimed_ppm": 500_000, "winner": False},
    ]


def test_saved_history_is_loaded_by_a_resumed_devnet(tmp_path: Path) -> None:
    h = History(tmp_path / "history.json")
    h.record(2, "miner-2", measured_ppm=1)
    h.mark_winner(2, None)
    h.save()
    again = History(tmp_path / "history.json")
    again.load()
    assert again.snapshot() == [{"round": 2, "miner": "miner-2", "measured_ppm": 1,
                                 "winner": False}]


def test_invalid_history_file_starts_afresh(tmp_path: Path) -> None:
    (tmp_path / "history.json").write_text("{not json")
    h = History(tmp_path / "history.json")
    h.load()
    assert h.snapshot() == []


def test_narrator_names_miners_and_records_commits(tmp_path: Path) -> None:
    out = io.StringIO()
    h = History(tmp_path / "h.json")
    n = Narrator(out, h)
    n.names["ab" * 20] = "miner-1"
    n.on_event("committed", {"round": 3, "miner": "AB" * 20, "epochs": 2,
                             "watermark_confidence": 0.5})
    n.names["cd" * 20] = "publisher"
    n.outcome(3, {"winner": {"miner": "ab" * 20, "verified_score_ppm": 750_000,
                             "task_reward": 10, "block_reward_miner": 4,
                             "block_reward_publisher": 1},
                  "publisher": "cd" * 20, "queue_len": 90, "publisher_share_ppm": 190_000})
    n.outcome(4, {"outcome": "no_reveals"})
    text = out.getvalue()
    assert "round 3: miner-1 committed its model (2 epoch(s)" in text
    assert f"round 3: winner: {'ab' * 20} (miner-1) score 0.7500\n" in text
    # every part of the payout says what it is (a bare "4 miner / 1 publisher" reads as a bug)
    assert ("round 3: paid: miner-1 gets the task reward 10 + 4 of the 5 block reward, "
            "publisher the other 1 (paper Eq. 5-6: publisher share 19.00% with 90 task(s) "
            "queued)\n") in text
    assert "round 4: closed without a winner (outcome no_reveals)" in text
    assert h.snapshot() == [{"round": 3, "miner": "miner-1", "watermark_confidence": 0.5,
                             "epochs": 2}]


def test_narrator_payout_of_an_unnamed_publisher_without_queue_facts(tmp_path: Path) -> None:
    n = Narrator(io.StringIO(), History(tmp_path / "h.json"))
    line = n.payout({"publisher": "ef" * 20, "winner": {
        "miner": "ab" * 20, "task_reward": 7, "block_reward_miner": 2,
        "block_reward_publisher": 3}})
    assert line == (f"paid: {'ab' * 6} gets the task reward 7 + 2 of the 5 block reward, "
                    f"publisher {'ef' * 6} the other 3")
