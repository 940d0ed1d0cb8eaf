"""Chain parameters of DLBC (DESIGN §4-§6), set in genesis `app_state["params"]`.

Every field is an integer so that the consensus arithmetic is bit-identical on every node
(DESIGN §5, §9). Fractions are in parts per million (ppm). Times are seconds of BFT block time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

PPM = 1_000_000

#: Registry architectures a SubmitTask may name (DESIGN §3: publishers never ship code; miners and
#: validators build the named module from training/models.py `ARCHITECTURES`). A plain, torch-free
#: tuple so consensus never imports torch; it must equal `sorted(ARCHITECTURES)` there (the lead's
#: consistency test checks it). Changing it changes which txs are valid: a chain upgrade.
ARCHITECTURES: tuple[str, ...] = ("cnn", "fcn", "unet2d", "unet3d")


@dataclass(frozen=True, slots=True)
class Params:
    """Chain parameters with documented defaults (used when genesis gives none)."""

    train_seconds: int = 300
    """TRAIN phase (paper P1+P2): the data key is released and commitments are accepted only here."""
    reveal_seconds: int = 60
    """REVEAL phase (start of paper P3): test key and model reveals."""
    verify_seconds: int = 120
    """VERIFY phase (paper P3 validation): validators evaluate; the round settles by vote extensions."""
    k_ppm: int = 1_000_000
    """Paper Eq. 1/5 scaling factor k > 0, in ppm (1_000_000 is k = 1)."""
    max_queue_len: int = 100
    """Paper L: the estimated maximum task-queue length (>= 2 so that ln L > 0)."""
    block_reward: int = 1_000_000
    """Minted once per settled round with a winner; split publisher/miner by paper Eq. 5-6."""
    tolerance_ppm: int = 20_000
    """A verdict confirms a claim when |measured - claimed| <= tolerance (DESIGN §6)."""
    watermark_threshold_ppm: int = 999_900
    """Per-bit confidence the verifier requires to detect a watermark (paper 0.9999, DESIGN §7)."""
    withhold_fee_ppm: int = 50_000
    """Share of the reward kept (to the fee pool) when a task is refunded: key withheld, no winner twice."""
    min_task_reward: int = 1
    """Smallest escrow a SubmitTask may carry (the ranking score divides by it)."""
    max_pending_tasks: int = 100_000
    """Hard cap on the pending pool, bounding state and selection time."""
    max_tx_bytes: int = 65_536
    """Largest accepted tx (CheckTx and FinalizeBlock reject bigger ones)."""
    max_reveals_per_round: int = 1_000
    """Cap on RevealModel per round, bounding the settlement loop."""

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: Any) -> Params:
        """Parse and validate; unknown keys or bad values raise ValueError naming the field."""
        if obj is None:
            obj = {}
        if not isinstance(obj, dict):
            raise ValueError("params must be a JSON object")  # noqa: TRY004
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise ValueError(f"unknown params: {', '.join(unknown)}")
        values: dict[str, int] = {}
        for name, raw in obj.items():
            values[name] = _as_int(raw, f"params.{name}")
        params = cls(**values)
        params.validate()
        return params

    def validate(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"params.{f.name} must be a non-negative integer, got {v!r}")
        for name in ("train_seconds", "reveal_seconds", "verify_seconds", "k_ppm",
                     "min_task_reward", "max_pending_tasks", "max_tx_bytes",
                     "max_reveals_per_round"):
            if getattr(self, name) <= 0:
                raise ValueError(f"params.{name} must be > 0")
        if self.max_queue_len < 2:
            raise ValueError("params.max_queue_len (L) must be >= 2 so that ln L > 0 (paper Eq. 1)")
        for name in ("tolerance_ppm", "watermark_threshold_ppm", "withhold_fee_ppm"):
            if getattr(self, name) > PPM:
                raise ValueError(f"params.{name} must be <= {PPM} (ppm)")


def _as_int(raw: Any, where: str) -> int:
    """Integers may come as JSON numbers or decimal strings (64-bit values in JSON, DESIGN §2)."""
    if isinstance(raw, bool):
        raise ValueError(f"{where} must be an integer, got a boolean")  # noqa: TRY004
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.isascii() and raw.isdigit():
        return int(raw)
    raise ValueError(f"{where} must be a non-negative integer or decimal string, got {raw!r}")
