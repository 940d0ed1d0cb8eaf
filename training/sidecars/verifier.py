"""The verifier sidecar: one per validator, the eyes behind its vote extension
(docs/verification.md).

In VERIFY of every round the verifier
1. fetches the revealed test set (URI and digest from the task spec, key from RevealTestSet),
2. goes through the revealed models in decreasing claimed score (the winner is the highest
   confirmed claim, so the best candidates are checked first), and for each, in a worker
   thread bounded by `per_model_seconds`:
   fetch with a size cap and the revealed SHA-256 (docs/artifacts.md) → strict safetensors load into
   the spec's registry architecture (no pickle, ever) → detect the revealing miner's watermark for
   this round's seed under the chain's watermark params (bits, matrix, gain, threshold:
   `WatermarkScheme`, docs/watermark.md) → check the model carries no *other* miner's watermark (the
   copy/overwrite defence below) → measure the score on the test set with the same integer-exact
   evaluation the miner used,
3. writes the verdicts with `abci_app.dlbc.verdicts.write_verdicts(app_home, round, ...)`; the
   validator's app reads them in ExtendVote.

Verdict policy: a model that provably fails (digest mismatch, not safetensors, wrong tensors,
watermark absent) gets a negative verdict (watermark_ok=False, score 0 when unmeasurable); a
model the verifier could not obtain or finish in time (404, timeout, node slow) gets **no**
verdict — "a model it cannot check in time gets no verdict rather than a wrong one" (issue 6).

Copy/overwrite defence: `training.sidecars.copy_marks` (which marks a model must not carry, and
the statistical test for "carries").
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from abci_app.dlbc.params import PPM
from abci_app.dlbc.records import Phase, Reveal, RoundInfo, Task, TaskSpec
from abci_app.keyfile import KeyPair
from training.sidecars.base import (
    Sidecar,
    SidecarConfig,
    WatermarkParamsError,
    WatermarkScheme,
    seconds_left,
)
from training.sidecars.copy_marks import OtherMark, foreign_mark, marks_to_exclude
from training.sidecars.metrics_server import Metrics
from training.sidecars.rpc_client import RpcClient
from training.sidecars.task_inputs import check_remote_uri, fetch_dataset, spec_hparams

if TYPE_CHECKING:
    from training.data import ArrayDataset

T = TypeVar("T")


class Unavailable(Exception):
    """The model could not be obtained (404, timeout, connection refused): no verdict."""


class TestSetUnusable(Exception):
    """The revealed test set cannot be fetched, does not match its digest, or does not decrypt
    or load: the publisher's fault, reported in the vote extension."""


@dataclass
class VerifierConfig(SidecarConfig):
    app_home: Path = field(default_factory=lambda: Path("."))
    """The validator app's --home: verdicts go to <app_home>/verdicts/round-<n>.json."""
    test_set_attempts: int = 3
    """Tries to fetch the test set before reporting it unusable (1 s, 2 s apart)."""
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


def check_model(reveal: Reveal, spec: TaskSpec, seed: bytes, test: ArrayDataset,
                *, scheme: WatermarkScheme, max_bytes: int, timeout: float,
                others: Sequence[OtherMark] = (), device: str = "cpu",
                allow_file: bool = False) -> ModelCheck:
    """Fetch, load, watermark-check and score one revealed model. Raises `Unavailable`.

    `scheme` is the chain's (`ChainClient.watermark_scheme`); `others` are the marks the model
    must NOT carry (see the module docstring), the revealing miner's own being skipped.
    """
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
    from watermark import WatermarkError, detect_vector
    from watermark.layers import layer_from

    t0 = time.monotonic()
    miner = reveal.miner.hex()
    out = ModelCheck(miner=miner, model_digest=reveal.model_digest.hex(),
                     claimed_score_ppm=reveal.claimed_score_ppm, verdict=True)
    uri = reveal.model_uri
    try:
        check_remote_uri(uri, allow_file)
    except ArtifactError as exc:  # not fetchable by the other validators either: refuted
        out.reason = f"model URI refused: {exc}"
        return out
    try:
        data = fetch_bytes(uri, max_bytes=max_bytes, sha256=reveal.model_digest.hex(),
                           timeout=timeout)
    except DigestMismatch as exc:
        out.reason = f"digest mismatch: {exc}"
        return out
    except TooLarge as exc:
        out.reason = f"model too large: {exc}"
        return out
    except ArtifactError as exc:  # HTTP error, timeout, refused, missing file
        raise Unavailable(str(exc)) from exc
    model = build_model(spec.architecture, spec_hparams(spec))
    try:
        load_into(model, load_state_dict_bytes(data))
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
    else:
        copied = foreign_mark(w, layer, miner, others, scheme)
        if copied is not None:
            out.watermark_ok = False
            out.reason = f"carries {copied.miner}'s watermark ({copied.why}): a copied model"
    out.score_ppm = evaluate(model, test, spec.metric, device=device)
    out.seconds = time.monotonic() - t0
    return out


def run_bounded(fn: Callable[[], T], timeout: float) -> T:
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
    value: T = box["value"]
    return value


class Verifier(Sidecar):
    role = "verifier"

    def __init__(self, cfg: VerifierConfig, key: KeyPair | None = None, *,
                 rpc: RpcClient | None = None, metrics: Metrics | None = None) -> None:
        super().__init__(cfg, key=key, rpc=rpc, metrics=metrics)
        self.vcfg = cfg
        self.checks: dict[int, list[ModelCheck]] = {}
        # round -> its test set, fetched during REVEAL, or why it could not be used
        self._test_sets: dict[int, ArrayDataset | TestSetUnusable] = {}

    def on_round(self, info: RoundInfo) -> None:
        rec = info.record
        n = rec.round
        if rec.phase is Phase.REVEAL and rec.test_key_revealed:
            if self.once(n, "test set"):
                self._prefetch_test_set(info)  # as soon as RevealTestSet lands (issue 11 §5)
            return
        if rec.phase is not Phase.VERIFY:
            return
        if not self.once(n, "verify"):
            return
        from training.sidecars.rpc_types import RpcError

        try:
            self.verify_round(info)
        except RpcError:
            self._done.discard((n, "verify"))  # node hiccup: try again at the next poll
            raise

    def _fetch_test_set(self, n: int, task: Task) -> ArrayDataset:
        """The round's test set, fetched and decrypted; a few tries before calling it unusable
        (a refusal here blames the publisher on chain, so a transient hiccup must not)."""
        from training.artifacts import ArtifactError

        spec, test_key = task.spec, task.test_key or b""
        last: Exception | None = None
        for attempt in range(self.vcfg.test_set_attempts):
            dest = self.cfg.workdir / (
                f"round-{n}-test-{os.getpid()}-{threading.get_ident()}.npz.enc")
            try:
                return fetch_dataset(spec.test_uri, spec.test_sha256.hex(), 0, test_key, dest,
                                     self.vcfg.max_data_bytes, spec.num_classes or None,
                                     allow_file=self.vcfg.allow_file_uris)
            except (ArtifactError, ValueError, OSError) as exc:
                last = exc
                if attempt + 1 < self.vcfg.test_set_attempts:
                    time.sleep(min(2.0 ** attempt, 4.0))
            finally:
                dest.unlink(missing_ok=True)
        raise TestSetUnusable(str(last))

    def _prefetch_test_set(self, info: RoundInfo) -> None:
        n, tid = info.record.round, info.record.task_id
        task = self.chain.task(tid)
        if task is None or task.test_key is None:
            self._done.discard((n, "test set"))  # not visible yet: next poll
            return
        try:
            self._test_sets[n] = self._fetch_test_set(n, task)
        except TestSetUnusable as exc:
            self._test_sets[n] = exc
            self.count_error("data", "round %d: test set unusable: %s", n, exc)

    def verify_round(self, info: RoundInfo) -> list[ModelCheck]:
        from abci_app.dlbc.verdicts import Verdict, write_verdicts

        rec = info.record
        n, tid = rec.round, rec.task_id
        task = self.chain.task(tid)
        if task is None or task.test_key is None:
            self.count_error("chain", "round %d: task %d has no revealed test key", n, tid)
            return []
        spec = task.spec
        try:
            scheme = self.chain.watermark_scheme()
        except WatermarkParamsError as exc:
            self.count_error("chain", "round %d: cannot verify: %s", n, exc)
            return []
        previous = self.chain.round_record(n - 1) if n > 1 else None
        others = marks_to_exclude(info, previous)
        cached = self._test_sets.pop(n, None)
        for old in [k for k in self._test_sets if k < n]:
            del self._test_sets[old]
        try:
            if isinstance(cached, TestSetUnusable):
                raise cached
            test = cached if cached is not None else self._fetch_test_set(n, task)
        except TestSetUnusable as exc:
            # The publisher's fault, said on chain: a complete set with the complaint and no
            # scores (settle.py step 5 pays the revealing miners from the escrow).
            self.count_error("data", "round %d: test set unusable: %s", n, exc)
            write_verdicts(self.vcfg.app_home, n, [], test_set_unusable=True)
            self.emit("verdicts", round=n, checks=[])
            return []
        reveals = sorted(info.revealed, key=lambda r: (-r.claimed_score_ppm, r.miner))
        cap = self.vcfg.max_model_bytes
        if spec.model_size_bytes > 0:
            # safetensors = payload + a JSON header; 1 MiB + 10% covers any header we write
            cap = min(cap, spec.model_size_bytes * 11 // 10 + (1 << 20))
        seed = rec.seed
        checks: list[ModelCheck] = []
        for rev in reveals:
            miner, digest = rev.miner.hex(), rev.model_digest.hex()
            left = seconds_left(rec.verify_end_ns) - self.vcfg.verify_margin_seconds
            bound = min(self.vcfg.per_model_seconds, left)
            if bound <= 0:
                self.count_error("timeout", "round %d: VERIFY time is up; %s gets no verdict",
                                 n, miner)
                checks.append(ModelCheck(miner, digest, rev.claimed_score_ppm, False,
                                         reason="VERIFY time is up"))
                continue
            t0 = time.monotonic()
            try:
                chk = run_bounded(functools.partial(
                    check_model, rev, spec, seed, test, scheme=scheme, max_bytes=cap,
                    timeout=bound, others=others, device=self.vcfg.device,
                    allow_file=self.vcfg.allow_file_uris), bound)
            except (TimeoutError, Unavailable) as exc:
                kind = "timeout" if isinstance(exc, TimeoutError) else "model_unavailable"
                self.count_error(kind, "round %d: no verdict for %s: %s", n, miner, exc)
                chk = ModelCheck(miner, digest, rev.claimed_score_ppm, False, reason=str(exc))
            except Exception as exc:
                self.metrics.inc("errors_total", kind="check")
                self.log.exception("round %d: checking %s failed", n, miner)
                chk = ModelCheck(miner, digest, rev.claimed_score_ppm, False,
                                 reason=f"internal error: {exc}")
            chk.seconds = time.monotonic() - t0
            if chk.verdict and chk.reason:
                self.count_error("bad_model", "round %d: %s: %s", n, miner, chk.reason)
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
