"""The devnet's record of each round per miner (OUT/history.json): what the plots draw.

One row per (round, miner) with whatever was learnt so far: the miner's own watermark
confidence and epochs at commit, its claimed score at reveal, the verifier's measurement, and
whether it won. Kept across runs, so a resumed devnet's plots continue its earlier rounds.
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

    def save(self) -> None:
        text = json.dumps(self.snapshot(), indent=2, sort_keys=True)
        atomic_write(self.path, text.encode(), mode=0o644)
