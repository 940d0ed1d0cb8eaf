"""The local verdict interface between a validator's verifier sidecar and its app
(docs/verification.md).

The sidecar (training/ verifier) waits until round n is in VERIFY (query `round`), evaluates
every revealed model of round n (`revealed` in the query answer) and then calls
`write_verdicts(home, n, verdicts)` once, with one verdict per revealed model; `ExtendVote`
calls `read_verdicts(home, n)` for the chain's active round at every height.

File: `<home>/verdicts/round-<n>.json`, written atomically (temp file + fsync + os.replace), so a
reader sees either nothing or the whole file::

    {"round": n,
     "verdicts": [{"miner": "<40 hex>", "model_digest": "<64 hex>",
                   "watermark_ok": true, "score_ppm": 873000}, ...]}

A verdict whose model failed the proof-of-learning check (docs/proof_of_learning.md) also has
``"trajectory_failed": true``; the key is left out otherwise, so files stay as they were.

`home` is the app's --home (the same directory `DlbcApplication(home)` gets). Reading never
raises and never blocks: a missing, partial or malformed file reads as None, and ExtendVote then
sends an empty extension (CometBFT has no timeout on ExtendVote and halts on an error).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abci_app.dlbc.wire import check_json_shape
from abci_app.fsutil import atomic_write

MAX_FILE_BYTES = 1 << 20
MAX_VERDICTS = 1_000


@dataclass(frozen=True, slots=True)
class Verdict:
    """One validator's finding on one revealed model."""

    miner: bytes  # 20-byte address of the revealing miner
    model_digest: bytes  # 32-byte SHA-256 of the safetensors file
    watermark_ok: bool
    score_ppm: int  # measured on the revealed test set, 0..1_000_000
    trajectory_failed: bool = False
    """The proof-of-learning spot-check refuted the model's training trajectory."""

    @property
    def provenance_ok(self) -> bool:
        """Whether the model is its miner's own work as far as this validator checked: its
        watermark detected and no trajectory check failed (settle.py counts only such models
        as confirmed)."""
        return self.watermark_ok and not self.trajectory_failed

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"miner": self.miner.hex(), "model_digest": self.model_digest.hex(),
                               "watermark_ok": self.watermark_ok, "score_ppm": self.score_ppm}
        if self.trajectory_failed:
            out["trajectory_failed"] = True
        return out

    @classmethod
    def from_json(cls, obj: Any) -> Verdict:
        if not isinstance(obj, dict):
            raise ValueError("verdict must be an object")  # noqa: TRY004
        miner = bytes.fromhex(obj["miner"])
        digest = bytes.fromhex(obj["model_digest"])
        ok = obj["watermark_ok"]
        score = obj["score_ppm"]
        failed = obj.get("trajectory_failed", False)
        if len(miner) != 20 or len(digest) != 32:
            raise ValueError("miner must be 20 bytes and model_digest 32 bytes (hex)")
        if not isinstance(ok, bool) or not isinstance(score, int) or isinstance(score, bool):
            raise ValueError("watermark_ok must be a bool and score_ppm an int")  # noqa: TRY004
        if not 0 <= score <= 1_000_000:
            raise ValueError("score_ppm must be in 0..1000000")
        if not isinstance(failed, bool):
            raise ValueError("trajectory_failed must be a bool")  # noqa: TRY004
        return cls(miner, digest, ok, score, failed)


def verdict_path(home: Path | str, round_no: int) -> Path:
    return Path(home) / "verdicts" / f"round-{int(round_no)}.json"


@dataclass(frozen=True, slots=True)
class VerdictFile:
    """What the verifier has found so far for one round.

    complete: it has finished the round (only complete sets count in Settle, settle.py step 2);
    test_set_unusable: the publisher's revealed test set could not be used (fetch, digest,
    decryption or loading failed), which settles the round as the publisher's fault."""

    verdicts: tuple[Verdict, ...]
    complete: bool = True
    test_set_unusable: bool = False


def write_verdicts(home: Path | str, round_no: int,
                   verdicts: Iterable[Verdict | dict[str, Any]], *, complete: bool = True,
                   test_set_unusable: bool = False) -> Path:
    """Atomically (re)write this validator's verdicts for `round_no`. Validates every entry;
    one verdict per model (the first of duplicates is kept), as the chain requires."""
    items = [v if isinstance(v, Verdict) else Verdict.from_json(v) for v in verdicts]
    if len(items) > MAX_VERDICTS:
        raise ValueError(f"at most {MAX_VERDICTS} verdicts per round")
    if test_set_unusable and items:
        raise ValueError("a round whose test set is unusable has no scores to report")
    path = verdict_path(home, round_no)
    data = json.dumps({"round": int(round_no), "verdicts": [v.to_json() for v in items],
                       "complete": bool(complete), "test_set_unusable": bool(test_set_unusable)},
                      sort_keys=True).encode()
    return atomic_write(path, data)


def read_verdicts(home: Path | str, round_no: int) -> VerdictFile | None:
    """The verdict file of `round_no`, or None when absent or malformed. Never raises.

    A file without `complete` is complete (the verifier writes its verdicts once, at the end)."""
    try:
        path = verdict_path(home, round_no)
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            return None
        text = data.decode("utf-8")
        # the verifier's file decides this validator's vote extension: bound its shape first
        # (4 top-level keys, at most 5 values per verdict), so no input reaches a recursion limit
        check_json_shape(text, max_depth=3, max_values=8 + 6 * MAX_VERDICTS)
        obj = json.loads(text)
        if not isinstance(obj, dict) or obj.get("round") != round_no:
            return None
        raw = obj.get("verdicts")
        complete = obj.get("complete", True)
        unusable = obj.get("test_set_unusable", False)
        if (not isinstance(raw, list) or len(raw) > MAX_VERDICTS
                or not isinstance(complete, bool) or not isinstance(unusable, bool)):
            return None
        return VerdictFile(tuple(Verdict.from_json(v) for v in raw), complete, unusable)
    except (OSError, ValueError, KeyError, TypeError):
        return None
