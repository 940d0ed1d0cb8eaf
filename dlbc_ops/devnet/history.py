"""The devnet's record of each round per miner (OUT/history.json): what the plots draw.

One row per (round, miner) with whatever was learnt so far: the miner's own watermark
confidence, epochs and training times at commit (`step_seconds`: time in optimizer steps), its
claimed score at reveal, the verifier's measurement, whether it won, and once the round closed
its learning curve (`curve`: [{"epoch", "seconds", "score"}, ...], `dlbc_ops.devnet.curves`).
Kept across runs, so a resumed devnet's plots continue its earlier rounds.
"""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path
from typing import Any

from abci_app.fsutil import atomic_write


class History:
    """Rows are updated from sidecar threads (events) and the main loop (winners): one lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()
        """The main loop and the curve worker both save: the later snapshot must land last."""

    def load(self) -> None:
        """The rows of an earlier run, if its file is readable (else start afresh)."""
        if self.path.exists():
            with contextlib.suppress(OSError, ValueError):
                self.rows = list(json.loads(self.path.read_text()))

    def record(self, rnd: int, miner: str, **fields: Any) -> None:
        with self._lock:
            for row in self.rows:
                if row["round"] == rnd and row["miner"] == miner:
                    row.update(fields)
                    return
            self.rows.append({"round": rnd, "miner": miner, **fields})

    def mark_winner(self, rnd: int, winner: str | None) -> None:
        """Every row of round `rnd` learns whether its miner is `winner` (None: nobody won)."""
        with self._lock:
            for row in self.rows:
                if row["round"] == rnd:
                    row["winner"] = winner is not None and row["miner"] == winner

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(row) for row in self.rows]

    def curves(self, rnd: int) -> dict[str, list[dict[str, Any]]]:
        """Round `rnd`'s learning curves by miner (miners without one left out)."""
        with self._lock:
            return {row["miner"]: list(row["curve"]) for row in self.rows
                    if row["round"] == rnd and row.get("curve")}

    def save(self) -> None:
        with self._save_lock:
            text = json.dumps(self.snapshot(), indent=2, sort_keys=True)
            atomic_write(self.path, text.encode(), mode=0o644)
