"""Checking one revealed model: fetch it, then load, watermark-check and score it
(docs/verification.md "Per round", the verdict policy).

Two halves, because they run in different places: `fetch_model` is I/O and runs on one of the
verifier's download threads, bounded by a deadline and a minimum rate so that it ends by itself;
`check_model_bytes` is CPU (torch) and runs in the killable check worker
(`training.sidecars.check_worker`), so a model that takes too long to load or score is stopped by
killing the process, not abandoned on a thread. `check_model` chains both in the caller's thread
for tests and one-off checks.

Verdict policy: a model that provably fails (URI or address refused, digest mismatch, over the
size cap, not safetensors, wrong tensors, watermark absent, another miner's watermark present)
gets a negative verdict (watermark_ok=False, score 0 when unmeasured); a model that could not be
obtained in time (HTTP error, connection refused, too slow, out of time) gets **no** verdict:
"a model it cannot check in time gets no verdict rather than a wrong one" (issue 6). A refused
address reads "model URI refused" whatever answered there, so the verdict on chain never tells a
miner what listens on the validator's networks (issue 13).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from abci_app.dlbc.records import Reveal, TaskSpec
from training.sidecars.base import WatermarkScheme
from training.sidecars.copy_marks import OtherMark, foreign_mark
from training.sidecars.task_inputs import check_remote_uri, spec_hparams

if TYPE_CHECKING:
    from training.data import ArrayDataset


#: The screen: 1/8 of the test set, at least 16 samples; a claim further than 0.1 from the
#: model's score on it is checked last. 0.1 is 5 x the default tolerance, far beyond what a
#: slice of an honest model's test set moves its score in our tests (a slice that happens
#: to be far only delays that model, it never refutes it).
SCREEN_FRACTION = 8
SCREEN_MIN_SAMPLES = 16
SCREEN_MARGIN_PPM = 100_000


class Unavailable(Exception):
    """The model could not be obtained (404, timeout, too slow, refused): no verdict."""


@dataclass
class ModelCheck:
    """The outcome of checking one revealed model (kept for the devnet's printout)."""

    miner: str
    model_digest: str
    claimed_score_ppm: int
    verdict: bool  # False: no verdict (unavailable / out of time / not needed)
    watermark_ok: bool = False
    watermark_min_confidence: float = 0.0
    score_ppm: int = 0
    reason: str = ""
    seconds: float = 0.0
    deferred: bool = False
    """Screened and put back (`check_model_bytes` with `screen`): no verdict yet, checked in full
    once every unsuspicious model was."""
    trajectory_ok: bool = True
    """False: the proof-of-learning spot-check refuted the model's training trajectory
    (`training.sidecars.trajectory_check`); the verdict then says `trajectory_failed`."""
    trajectory: str = ""
    """What the spot-check did: the epochs replayed and their distances, or why it failed;
    empty when the chain does not check trajectories or the check was not needed."""
    replay_pending: bool = False
    """The model passed its own checks and its trajectory is still to be replayed (a check
    with `CheckJob.defer_replay`): no verdict yet, replayed in claim order later."""

    @property
    def confirms(self) -> bool:
        """Whether this verdict counts as the model's own work (settle.py's confirmation, before
        the tolerance on the score): a verdict, its watermark, its trajectory."""
        return self.verdict and self.watermark_ok and self.trajectory_ok

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ModelCheck:
        return cls(**obj)

    @classmethod
    def of(cls, reveal: Reveal, *, verdict: bool, reason: str = "") -> ModelCheck:
        return cls(reveal.miner.hex(), reveal.model_digest.hex(), reveal.claimed_score_ppm,
                   verdict, reason=reason)


def model_cap(spec: TaskSpec, max_model_bytes: int) -> int:
    """The largest model file the verifier downloads for `spec`: the operator's cap, and at most
    1.1 x the spec's declared size + 1 MiB (safetensors = payload + a JSON header; 1 MiB + 10 %
    covers any header we write)."""
    if spec.model_size_bytes > 0:
        return min(max_model_bytes, spec.model_size_bytes * 11 // 10 + (1 << 20))
    return max_model_bytes


def fetch_model(reveal: Reveal, dest: Path, *, max_bytes: int, timeout: float,
                allow_file: bool = False, allow_private: bool = False, min_rate_bps: int = 0,
                deadline: float | None = None) -> ModelCheck | None:
    """Download the revealed model to `dest`. None when it is there, digest checked; a negative
    `ModelCheck` for a provable fault; raises `Unavailable` when it could not be obtained.

    `deadline` (time.monotonic) and `min_rate_bps` make the download end by itself: a slow-drip
    server is dropped after the short grace `training.artifacts` allows, never waited out."""
    from training.artifacts import (
        AddressRefused,
        ArtifactError,
        DigestMismatch,
        TooLarge,
        TooSlow,
        fetch,
    )

    try:
        check_remote_uri(reveal.model_uri, allow_file, allow_private=allow_private)
    except AddressRefused:
        return ModelCheck.of(reveal, verdict=True, reason="model URI refused")
    except ArtifactError as exc:  # not fetchable by the other validators either: refuted
        return ModelCheck.of(reveal, verdict=True, reason=f"model URI refused: {exc}")
    try:
        fetch(reveal.model_uri, max_bytes=max_bytes, sha256=reveal.model_digest.hex(),
              dest=dest, timeout=timeout, allow_private=allow_private,
              min_rate_bps=min_rate_bps, deadline=deadline)
    except AddressRefused:  # a redirect hop or a DNS answer into our own networks
        return ModelCheck.of(reveal, verdict=True, reason="model URI refused")
    except DigestMismatch as exc:
        return ModelCheck.of(reveal, verdict=True, reason=f"digest mismatch: {exc}")
    except TooLarge as exc:
        return ModelCheck.of(reveal, verdict=True, reason=f"model too large: {exc}")
    except TooSlow as exc:
        raise Unavailable(f"too slow: {exc}") from exc
    except ArtifactError as exc:  # HTTP error, timeout, connection refused
        raise Unavailable(str(exc)) from exc
    return None


def screen_set(test: ArrayDataset, fraction: int = SCREEN_FRACTION) -> ArrayDataset | None:
    """The first 1/`fraction` of the test set (None when that is under `SCREEN_MIN_SAMPLES`)."""
    from training.data import ArrayDataset

    k = len(test) // fraction
    if k < SCREEN_MIN_SAMPLES:
        return None
    return ArrayDataset(test.inputs[:k], test.targets[:k], test.kind, test.num_classes)


def check_model_bytes(data: bytes, reveal: Reveal, spec: TaskSpec, seed: bytes,
                      test: ArrayDataset, *, scheme: WatermarkScheme,
                      others: Sequence[OtherMark] = (), device: str = "cpu",
                      screen: ArrayDataset | None = None) -> ModelCheck:
    """Load (strict safetensors into the spec's registry architecture, never pickle), detect the
    revealing miner's watermark, check for other miners' marks, and score the digest-checked
    bytes of one model. The cheap checks come first: a model without its miner's own mark is
    refuted without the (expensive) scoring.

    With `screen` (a slice of the test set, `screen_set`), the model is first scored on it; if
    that is more than `SCREEN_MARGIN_PPM` from the claim, the result is `deferred` instead of
    a verdict: the claim is probably a lie, and its full scoring waits until the models whose
    claims look right were scored. The screen never decides a verdict (a slice is not the
    test set), it only orders the work, so sybils that lie about their score cost the verifier
    a slice each, not a full evaluation, before the honest model is reached."""
    from training.artifacts import ArtifactError, load_into, load_state_dict_bytes, state_shapes
    from training.models import build_model
    from training.trainer import evaluate
    from watermark import WatermarkError, detect_vector
    from watermark.layers import layer_from

    out = ModelCheck.of(reveal, verdict=True)
    model = build_model(spec.architecture, spec_hparams(spec))
    try:
        # the header's names and shapes against the registry architecture before any tensor of
        # the file is allocated (training/safetensors_header.py)
        load_into(model, load_state_dict_bytes(data, expected=state_shapes(model)))
    except (ArtifactError, ValueError) as exc:
        out.reason = f"not a valid {spec.architecture} safetensors model: {exc}"
        return out
    try:
        layer = scheme.layer(model)
        w = layer_from(model, layer)  # the mean kernel, extracted once for every key below
        key = scheme.key(seed, reveal.miner, layer)
        det = detect_vector(w, key, scheme.threshold)
    except WatermarkError as exc:
        out.reason = f"watermark check failed: {exc}"
        return out
    out.watermark_ok = det.ok
    out.watermark_min_confidence = det.min_confidence
    if not det.ok:
        out.reason = f"watermark not detected (min confidence {det.min_confidence:.6f})"
        return out  # refuted whatever it scores: not worth the evaluation
    copied = foreign_mark(w, layer, out.miner, others, scheme)
    if copied is not None:
        out.watermark_ok = False
        out.reason = f"carries {copied.miner}'s watermark ({copied.why}): a copied model"
    elif screen is not None:
        quick = evaluate(model, screen, spec.metric, device=device)
        if abs(quick - reveal.claimed_score_ppm) > SCREEN_MARGIN_PPM:
            out.verdict, out.deferred, out.score_ppm = False, True, quick
            out.reason = f"deferred: scores {quick} on the first {len(screen)} test samples"
            return out
    out.score_ppm = evaluate(model, test, spec.metric, device=device)
    return out


def check_model(reveal: Reveal, spec: TaskSpec, seed: bytes, test: ArrayDataset,
                *, scheme: WatermarkScheme, max_bytes: int, timeout: float,
                others: Sequence[OtherMark] = (), device: str = "cpu",
                allow_file: bool = False, allow_private: bool = False,
                min_rate_bps: int = 0) -> ModelCheck:
    """Fetch and check one revealed model in this thread. Raises `Unavailable`.

    `scheme` is the chain's (`ChainClient.watermark_scheme`); `others` are the marks the model
    must NOT carry (`training.sidecars.copy_marks`), the revealing miner's own being skipped.
    The download is bounded by `timeout` in all (a deadline), not only per read.
    """
    import tempfile

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dlbc-check-") as tmp:
        dest = Path(tmp) / "model.safetensors"
        refuted = fetch_model(reveal, dest, max_bytes=max_bytes, timeout=timeout,
                              allow_file=allow_file, allow_private=allow_private,
                              min_rate_bps=min_rate_bps, deadline=t0 + timeout)
        if refuted is not None:
            refuted.seconds = time.monotonic() - t0
            return refuted
        data = dest.read_bytes()
    out = check_model_bytes(data, reveal, spec, seed, test, scheme=scheme, others=others,
                            device=device)
    out.seconds = time.monotonic() - t0
    return out
