"""The verifier sidecar: one per validator, the eyes behind its vote extension (DESIGN §6).

In VERIFY of every round the verifier
1. fetches the revealed test set (URI and digest from the task spec, key from RevealTestSet),
2. goes through the revealed models in decreasing claimed score (the winner is the highest
   confirmed claim, so the best candidates are checked first), and for each, in a worker
   thread bounded by `per_model_seconds`:
   fetch with a size cap and the revealed SHA-256 (DESIGN §8) → strict safetensors load into the
   spec's registry architecture (no pickle, ever) → detect the revealing miner's watermark for
   this round's seed (DESIGN §7, threshold from chain params) → measure the score on the test
   set with the same integer-exact evaluation the miner used,
3. writes the verdicts with `abci_app.dlbc.verdicts.write_verdicts(app_home, round, ...)`; the
   validator's app reads them in ExtendVote.

Verdict policy: a model that provably fails (digest mismatch, not safetensors, wrong tensors,
watermark absent) gets a negative verdict (watermark_ok=False, score 0 when unmeasurable); a
model the verifier could not obtain or finish in time (404, timeout, node slow) gets **no**
verdict — "a model it cannot check in time gets no verdict rather than a wrong one" (issue 6).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abci_app.keyfile import KeyPair
from training.metrics_server import Metrics
from training.miner import check_remote_uri, fetch_dataset, spec_hparams
from training.rpc_client import RpcClient
from training.sidecar import VERIFY, Sidecar, SidecarConfig, seconds_left

PPM = 1_000_000
WATERMARK_BITS = 256  # must match the miners' key length (paper: 256 bits)


class Unavailable(Exception):
    """The model could not be obtained (404, timeout, connection refused): no verdict."""


@dataclass
class VerifierConfig(SidecarConfig):
    app_home: Path = field(default_factory=lambda: Path("."))
    """The validator app's --home: verdicts go to <app_home>/verdicts/round-<n>.json."""
    per_model_seconds: float = 30.0
    """Time bound for fetching + loading + detecting + scoring one model."""
    verify_margin_seconds: float = 2.0
    """Stop starting new checks this long before VERIFY ends, so the verdicts still land."""
    max_model_bytes: int = 1 << 30
    """Never download a model larger than this (the spec's size is also enforced)."""
    max_data_bytes: int = 1 << 30
    device: str = "cpu"
    allow_file_uris: bool = False
    """Accept file:// model/test URIs (single-machine setups only)."""


@dataclass
class ModelCheck:
    """The outcome of checking one revealed model (kept for the devnet's printout)."""

    miner: str
    model_digest: str
    claimed_score_ppm: int
    verdict: bool  # False: no verdict (unavailable / out of time)
    watermark_ok: bool = False
    watermark_min_confidence: float = 0.0
    score_ppm: int = 0
    reason: str = ""
    seconds: float = 0.0


def check_model(reveal: dict[str, Any], spec: dict[str, Any], seed: bytes, test: Any, *,
                threshold: float, max_bytes: int, timeout: float,
                device: str = "cpu", allow_file: bool = False) -> ModelCheck:
    """Fetch, load, watermark-check and score one revealed model. Raises `Unavailable`."""
    from training.artifacts import (
        ArtifactError,
        DigestMismatch,
        TooLarge,
        fetch_bytes,
        load_into,
        load_state_dict_bytes,
    )
    from training.models import build_model
    from training.trainer import evaluate
    from watermark import WatermarkError, default_layer, derive_key, detect

    t0 = time.monotonic()
    out = ModelCheck(miner=reveal["miner"], model_digest=reveal["model_digest"],
                     claimed_score_ppm=int(reveal["claimed_score_ppm"]), verdict=True)
    uri = str(reveal["model_uri"])
    try:
        check_remote_uri(uri, allow_file)
    except ArtifactError as exc:  # not fetchable by the other validators either
        raise Unavailable(str(exc)) from exc
    try:
        data = fetch_bytes(uri, max_bytes=max_bytes, sha256=reveal["model_digest"],
                           timeout=timeout)
    except DigestMismatch as exc:
        out.reason = f"digest mismatch: {exc}"
        return out
    except TooLarge as exc:
        out.reason = f"model too large: {exc}"
        return out
    except ArtifactError as exc:  # HTTP error, timeout, refused, missing file
        raise Unavailable(str(exc)) from exc
    model = build_model(spec["architecture"], spec_hparams(spec))
    try:
        load_into(model, load_state_dict_bytes(data))
    except (ArtifactError, ValueError) as exc:
        out.reason = f"not a valid {spec['architecture']} safetensors model: {exc}"
        return out
    try:
        layer = default_layer(model, n_bits=WATERMARK_BITS)
        key = derive_key(seed, bytes.fromhex(reveal["miner"]), layer=layer, n_bits=WATERMARK_BITS)
        det = detect(model, key, threshold=threshold)
    except WatermarkError as exc:
        out.reason = f"watermark check failed: {exc}"
        return out
    out.watermark_ok = det.ok
    out.watermark_min_confidence = det.min_confidence
    out.score_ppm = evaluate(model, test, spec["metric"], device=device)
    if not det.ok:
        out.reason = f"watermark not detected (min confidence {det.min_confidence:.6f})"
    out.seconds = time.monotonic() - t0
    return out


def run_bounded(fn: Any, timeout: float) -> Any:
    """Run `fn()` in a daemon thread; its result, or raise TimeoutError after `timeout` s.

    A daemon thread (not an executor) so that a check stuck on a slow-drip server can be
    abandoned without holding up the next model or the process exit.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target, name="verify-model", daemon=True)
    t.start()
    t.join(max(0.0, timeout))
    if t.is_alive():
        raise TimeoutError(f"check did not finish in {timeout:.1f}s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


class Verifier(Sidecar):
    role = "verifier"

    def __init__(self, cfg: VerifierConfig, key: KeyPair | None = None, *,
                 rpc: RpcClient | None = None, metrics: Metrics | None = None) -> None:
        super().__init__(cfg, key=key, rpc=rpc, metrics=metrics)
        self.vcfg = cfg
        self.checks: dict[int, list[ModelCheck]] = {}

    def on_round(self, rec: dict[str, Any]) -> None:
        if rec.get("phase") != VERIFY:
            return
        n = int(rec["round"])
        if not self.once(n, "verify"):
            return
        from training.rpc_client import RpcError

        try:
            self.verify_round(rec)
        except RpcError:
            self._done.discard((n, "verify"))  # node hiccup: try again at the next poll
            raise

    def verify_round(self, rec: dict[str, Any]) -> list[ModelCheck]:
        from abci_app.dlbc.verdicts import Verdict, write_verdicts
        from training.artifacts import ArtifactError

        n, tid = int(rec["round"]), int(rec["task_id"])
        task = self.chain.task(tid)
        if task is None or not task.get("test_key"):
            self.count_error("chain", "round %d: task %d has no revealed test key", n, tid)
            return []
        spec = task["spec"]
        params = self.chain.params()
        threshold = int(params.get("watermark_threshold_ppm", 999_900)) / PPM
        # unique name: several verifiers may share a workdir on one machine (localnet)
        dest = self.cfg.workdir / f"round-{n}-test-{os.getpid()}-{threading.get_ident()}.npz.enc"
        try:
            test = fetch_dataset(spec["test_uri"], spec["test_sha256"], 0,
                                 bytes.fromhex(task["test_key"]), dest, self.vcfg.max_data_bytes,
                                 int(spec.get("num_classes") or 0) or None,
                                 allow_file=self.vcfg.allow_file_uris)
        except (ArtifactError, ValueError, OSError) as exc:
            self.count_error("data", "round %d: test set unusable: %s", n, exc)
            return []
        finally:
            dest.unlink(missing_ok=True)
        reveals = sorted(rec.get("revealed") or [],
                         key=lambda r: (-int(r["claimed_score_ppm"]), r["miner"]))
        cap = self.vcfg.max_model_bytes
        if int(spec.get("model_size_bytes") or 0) > 0:
            # safetensors = payload + a JSON header; 1 MiB + 10% covers any header we write
            cap = min(cap, int(spec["model_size_bytes"]) * 11 // 10 + (1 << 20))
        seed = bytes.fromhex(rec["seed"])
        checks: list[ModelCheck] = []
        for rev in reveals:
            left = seconds_left(rec, "verify_end_ns") - self.vcfg.verify_margin_seconds
            bound = min(self.vcfg.per_model_seconds, left)
            if bound <= 0:
                self.count_error("timeout", "round %d: VERIFY time is up; %s gets no verdict",
                                 n, rev["miner"])
                checks.append(ModelCheck(rev["miner"], rev["model_digest"],
                                         int(rev["claimed_score_ppm"]), False,
                                         reason="VERIFY time is up"))
                continue
            t0 = time.monotonic()
            try:
                chk = run_bounded(lambda r=rev, b=bound: check_model(
                    r, spec, seed, test, threshold=threshold, max_bytes=cap, timeout=b,
                    device=self.vcfg.device, allow_file=self.vcfg.allow_file_uris), bound)
            except (TimeoutError, Unavailable) as exc:
                kind = "timeout" if isinstance(exc, TimeoutError) else "model_unavailable"
                self.count_error(kind, "round %d: no verdict for %s: %s", n, rev["miner"], exc)
                chk = ModelCheck(rev["miner"], rev["model_digest"], int(rev["claimed_score_ppm"]),
                                 False, reason=str(exc))
            except Exception as exc:
                self.metrics.inc("errors_total", kind="check")
                self.log.exception("round %d: checking %s failed", n, rev["miner"])
                chk = ModelCheck(rev["miner"], rev["model_digest"], int(rev["claimed_score_ppm"]),
                                 False, reason=f"internal error: {exc}")
            chk.seconds = time.monotonic() - t0
            if chk.verdict and chk.reason:
                self.count_error("bad_model", "round %d: %s: %s", n, rev["miner"], chk.reason)
            checks.append(chk)
            self.log.info(
                "round %d: %s claimed %d measured %d watermark %s (%.1fs)%s", n, chk.miner,
                chk.claimed_score_ppm, chk.score_ppm, "ok" if chk.watermark_ok else "NO",
                chk.seconds, "" if chk.verdict else " -> no verdict")
        verdicts = [Verdict(bytes.fromhex(c.miner), bytes.fromhex(c.model_digest),
                            c.watermark_ok, max(0, min(PPM, c.score_ppm)))
                    for c in checks if c.verdict]
        write_verdicts(self.vcfg.app_home, n, verdicts)
        self.metrics.inc("verdicts_total", len(verdicts))
        self.checks[n] = checks
        self.emit("verdicts", round=n, checks=checks)
        return checks
