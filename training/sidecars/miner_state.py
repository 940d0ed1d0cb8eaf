"""What the miner keeps of one round (`RoundWork`, persisted as `rounds/<n>/state.json`) and why
it gives a round up (`RoundSkipped`).

Their own module because two threads share them (docs/processes.md "The miner's threads"): the
training worker (`miner_train`) creates a round's `RoundWork` and writes it to disk before it
hands the model over, the poll loop (`miner`) commits, reveals and updates it. state.json is
written before the commit is sent, so a restarted miner can still reveal what it committed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from abci_app.fsutil import atomic_write


class RoundSkipped(Exception):
    """This round cannot be mined (bad data, no time left, ...); logged and counted."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


@dataclass
class RoundWork:
    """What the miner did in one round; persisted as rounds/<n>/state.json."""

    round: int
    task_id: int
    model_path: str = ""
    model_uri: str = ""
    model_digest: str = ""
    salt: str = ""
    checkpoint_digests: list[str] = field(default_factory=list)
    epochs: int = 0
    train_seconds: float = 0.0
    """Wall time of the `train()` call (TrainResult.wall_seconds)."""
    step_seconds: float = 0.0
    """Time inside the optimizer-step loops (TrainResult.step_seconds): the useful work that the
    duty-cycle benchmark (bench/round_pipeline.py) divides by wall-clock time."""
    train_started_ns: int = 0
    train_ended_ns: int = 0
    """`time.time_ns()` just before and just after the `train()` call: with pipelined rounds a
    round's training interval overlaps the previous round's reveal."""
    epoch_elapsed: list[float] = field(default_factory=list)
    """Seconds since the start of training at the end of each epoch (learning curves)."""
    checkpoint_dir: str = ""
    watermark_min_confidence: float = 0.0
    committed: bool = False
    revealed: bool = False
    claimed_score_ppm: int | None = None
    public_dir: str = ""
    """Name of the served folder (`artifacts/<token>`) once published at REVEAL; empty before."""

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(directory / "state.json",
                     json.dumps(asdict(self), indent=2, sort_keys=True).encode(), mode=0o600)

    @classmethod
    def load(cls, directory: Path) -> RoundWork | None:
        try:
            doc = json.loads((directory / "state.json").read_text())
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in doc.items() if k in known})
        except (OSError, ValueError, TypeError, AttributeError):
            return None

    def timing(self) -> dict[str, object]:
        """The per-round timing fields of the `committed` event (the devnet and the bench read
        them)."""
        return {"step_seconds": self.step_seconds, "train_seconds": self.train_seconds,
                "train_started_ns": self.train_started_ns, "train_ended_ns": self.train_ended_ns,
                "epoch_elapsed": list(self.epoch_elapsed), "checkpoint_dir": self.checkpoint_dir}
