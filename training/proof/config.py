"""What a replay of a miner's training needs to know besides the checkpoints: `ReplayConfig`.

docs/proof_of_learning.md "Replayable steps": every checkpoint carries this configuration (as
the `dlbc.pol` metadata, and the manifest once more), so a validator replays an epoch with the
miner's very hyper-parameters. It comes from a stranger, hence `from_json` is strict: every key,
nothing extra, exact types, bounded ranges; anything else is a ValueError saying what was wrong.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeGuard, cast, get_args

from training.models import resolve_hparams
from training.trainer import LossName

LOSSES: tuple[str, ...] = get_args(LossName)
AUTOCASTS = ("none", "bf16")
_MAX_ID_BYTES = 64
_MAX_BATCH = 1 << 20
_MAX_SEAL_STEPS = 1_000_000
_PPM = 1_000_000
_MAX_THREADS = 4096
_FLOAT_FIELDS = ("learning_rate", "weight_decay", "watermark_lambda", "watermark_temperature",
                 "seal_lr")
_HEX = re.compile(rf"(?:[0-9a-f]{{2}}){{1,{_MAX_ID_BYTES}}}")


@dataclass(frozen=True)
class ReplayConfig:
    """The miner's training run as a replay needs it (TrainConfig and MinerConfig values)."""

    arch: str
    """Registry architecture (training.models)."""
    hparams: dict[str, int]
    """Its hyper-parameters as the task spec gave them."""
    round_seed: bytes
    """The round's seed: with `miner`, it fixes the anchored start and every epoch's order."""
    miner: bytes
    """The miner's address."""
    learning_rate: float
    weight_decay: float
    batch_size: int
    loss: LossName
    watermark_lambda: float
    """Weight of the watermark term the miner added to every step's loss (0: none)."""
    watermark_temperature: float
    autocast: str
    """"none" (float32) or "bf16" (CUDA autocast): picks the threshold row."""
    seal_lr: float
    """Learning rate of the watermark sealing after training (training.sidecars.sealing)."""
    seal_max_steps: int
    watermark_threshold_ppm: int
    """The chain's detection threshold the sealing aimed at, in ppm."""
    torch_threads: int = 0
    """torch's intra-op threads the miner trained with (0: not recorded). A CPU replay on the
    same thread count is bit-exact on the same CPU family, so the replay uses it (at most
    `MAX_REPLAY_THREADS`); on another count the float sums regroup and the U-Nets drift
    (thresholds.py)."""

    def __post_init__(self) -> None:
        for f in _FLOAT_FIELDS:  # an integral learning rate or lambda written as an int
            value = getattr(self, f)
            if _is_int(value) and abs(value) <= 1 << 53:
                object.__setattr__(self, f, float(value))
        try:
            resolve_hparams(self.arch, self.hparams)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"pol config: {exc}") from None
        for name in ("round_seed", "miner"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or not 1 <= len(value) <= _MAX_ID_BYTES:
                raise ValueError(f"pol config: {name} must be 1..{_MAX_ID_BYTES} bytes")
        _check_float("learning_rate", self.learning_rate, positive=True)
        _check_float("weight_decay", self.weight_decay)
        _check_float("watermark_lambda", self.watermark_lambda)
        _check_float("watermark_temperature", self.watermark_temperature, positive=True)
        _check_float("seal_lr", self.seal_lr, positive=True)
        _check_int("batch_size", self.batch_size, 1, _MAX_BATCH)
        _check_int("seal_max_steps", self.seal_max_steps, 0, _MAX_SEAL_STEPS)
        _check_int("watermark_threshold_ppm", self.watermark_threshold_ppm, 0, _PPM)
        _check_int("torch_threads", self.torch_threads, 0, _MAX_THREADS)
        if self.loss not in LOSSES:
            raise ValueError(f"pol config: loss must be one of {LOSSES}, got {self.loss!r:.40}")
        if self.autocast not in AUTOCASTS:
            raise ValueError(f"pol config: autocast must be one of {AUTOCASTS}, got "
                             f"{self.autocast!r:.40}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (bytes as lowercase hex)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["hparams"] = dict(sorted(self.hparams.items()))
        out["round_seed"] = self.round_seed.hex()
        out["miner"] = self.miner.hex()
        return out

    @classmethod
    def from_json(cls, obj: object) -> ReplayConfig:
        """Parse `to_json`'s output strictly; ValueError naming the first problem."""
        if not isinstance(obj, Mapping):
            raise ValueError("pol config must be a JSON object")  # noqa: TRY004 - one error type
        want = {f.name for f in fields(cls)}
        missing, extra = sorted(want - set(obj)), sorted(str(k)[:40] for k in set(obj) - want)
        if missing or extra:
            raise ValueError(f"pol config: missing keys {missing}, unexpected keys {extra}")
        hparams = obj["hparams"]
        if not isinstance(hparams, Mapping) or len(hparams) > 32 or not all(
                isinstance(k, str) and _is_int(v) for k, v in hparams.items()):
            raise ValueError("pol config: hparams must map names to integers")
        return cls(
            arch=_str(obj, "arch"), hparams=dict(hparams),
            round_seed=_hex(obj, "round_seed"), miner=_hex(obj, "miner"),
            learning_rate=_num(obj, "learning_rate"), weight_decay=_num(obj, "weight_decay"),
            batch_size=_int(obj, "batch_size"), loss=cast(LossName, _str(obj, "loss")),
            watermark_lambda=_num(obj, "watermark_lambda"),
            watermark_temperature=_num(obj, "watermark_temperature"),
            autocast=_str(obj, "autocast"), seal_lr=_num(obj, "seal_lr"),
            seal_max_steps=_int(obj, "seal_max_steps"),
            watermark_threshold_ppm=_int(obj, "watermark_threshold_ppm"),
            torch_threads=_int(obj, "torch_threads"),
        )


def _is_int(x: object) -> TypeGuard[int]:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_float(name: str, value: object, *, positive: bool = False) -> None:
    if not isinstance(value, float) or not math.isfinite(value) or value < 0 \
            or (positive and value == 0):
        need = "> 0" if positive else ">= 0"
        raise ValueError(f"pol config: {name} must be a finite float {need}, got {value!r:.40}")


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if not _is_int(value) or not lo <= value <= hi:
        raise ValueError(f"pol config: {name} must be an integer in [{lo}, {hi}], got "
                         f"{value!r:.40}")


def _str(obj: Mapping[str, object], key: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise ValueError(f"pol config: {key} must be a string")  # noqa: TRY004 - as above
    return value


def _int(obj: Mapping[str, object], key: str) -> int:
    value = obj[key]
    if not _is_int(value):
        raise ValueError(f"pol config: {key} must be an integer")
    return value


def _num(obj: Mapping[str, object], key: str) -> float:
    """A JSON number (an integral float may come back as an int from another writer)."""
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"pol config: {key} must be a number")  # noqa: TRY004 - as above
    if isinstance(value, int) and abs(value) > 1 << 53:
        raise ValueError(f"pol config: {key} is out of range")
    return float(value)


def _hex(obj: Mapping[str, object], key: str) -> bytes:
    value = obj[key]
    if not isinstance(value, str) or _HEX.fullmatch(value) is None:
        raise ValueError(f"pol config: {key} must be 1..{_MAX_ID_BYTES} bytes as lowercase hex")
    return bytes.fromhex(value)
