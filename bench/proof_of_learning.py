"""Proof-of-learning bench (issue 15): honest replays across hardware, forgeries, verify cost.

Registry models of the demo and the tests: ``unet2d`` depth 3, base width 8 (the demo task's,
training/sidecars/task_prep.py ``DemoDataConfig``) on the demo's vessel images
(training/demo_data.py; 72 training images as in the demo, at ``--size`` pixels instead of 80);
and ``cnn`` depth 2, base width 64 (the smallest cnn whose last conv carries the chain's 256-bit
watermark) on scikit-learn's 8x8 digits, when scikit-learn is installed. Every run is what a
miner does (training/sidecars/miner_train.py): the anchored start, the trainer with the epoch
seeds and the checkpoint writer, MinerConfig's defaults (AdamW lr 3e-3, batch 16),
λ·embed_loss under the chain's default watermark scheme (λ 1, temperature 100), sealing; and
every check is `verify_trajectory` as the verifier calls it (training/sidecars/
trajectory_check.py), with the policy of the genesis `proof_of_learning` = 4 (``--policy``).

1. **Honest.** ``--runs`` (``--cnn-runs``) miners train ``--epochs`` epochs each, alternating
   the thread counts of ``--threads``; each run is checked with its own thread count (bit-exact:
   the baseline) and with the next one (in-process `torch.set_num_threads`), and on CUDA when a
   GPU is present. Counted: false rejections on other hardware. "spread": every epoch of the
   first ``--spread-runs`` runs is replayed on the other thread count (and CUDA), and the
   distribution of the three distances the check takes the largest of is printed: what the
   thresholds of training/proof/thresholds.py must sit above.
2. **Forged.** For ``--instances`` (``--cnn-instances``) victims a thief steals the victim's
   revealed model (its watermark overwritten by the thief's: watermark/attacks.py `forge`) and
   builds every class of training/proof/forgeries.py, 11 forgeries per victim: interpolated
   (linear with zero AdamW state; front-loaded with consistent state), fine-tuned with a
   fabricated history (1 and 3 genuine epochs), a different start (the thief's own run from
   another seed, as is and with epoch 0 swapped for its anchor; the victim's run relabelled, as
   is and swapped), a skipped epoch (the victim's own run, dropping epoch 1, E/2 or E). Counted:
   forgeries caught, by which check, and the closest a failed replay came to the threshold.
3. **Cost.** Seconds of the whole `verify_trajectory` at the training's own thread count over
   the seconds of that run's `trainer.train` (checkpoints included), summed over runs, in %.

Last line: ``honest pass A/B, forged caught C/D, verify cost E.E% of training``. Goals (issue
15): no honest run rejected in >= 20; >= 99 % of forgeries caught; verify cost <= 10 %.

Usage: python bench/proof_of_learning.py [--quick] [--epochs 48] [--runs 16] [--cnn-runs 8]
       [--instances 6] [--cnn-instances 4] [--spread-runs 2] [--threads 1,2] [--policy 1,2,1]
       [--size 48] [--samples 72] [--no-cuda] [--workdir DIR]
The defaults (24 honest runs, 110 forgeries) take about 15 minutes on 2 idle cores; ``--quick``
about a minute. Timings vary with the machine and its load (two threads on two busy cores are
slower than one); nothing is asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# Run as `python bench/proof_of_learning.py`, this file's directory comes first on sys.path and
# would shadow the `training` and `watermark` packages through bench/training.py and
# bench/watermark.py; drop that entry.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import torch
from torch import Tensor, nn

from training.data import ArrayDataset, DataError, load_digits_dataset
from training.demo_data import make_vessels_2d
from training.models import build_model
from training.proof import forgeries
from training.proof.checkpoint import load_checkpoint
from training.proof.config import ReplayConfig
from training.proof.distance import l2_distance, normalised
from training.proof.forgeries import Forgery, Run
from training.proof.replay import replay_epoch
from training.proof.seeds import anchored_model
from training.proof.thresholds import threshold_for
from training.proof.verify import TrajectoryPolicy, TrajectoryReport, verify_trajectory
from training.sidecars.miner_train import warm_up_torch
from training.sidecars.scheme import WatermarkScheme
from training.sidecars.sealing import seal_watermark
from watermark import WatermarkKey, embed_loss

SCHEME = WatermarkScheme.genesis_default()
ROUND_SEED = hashlib.sha256(b"bench proof-of-learning round").digest()


@dataclass(frozen=True)
class ModelCase:
    """One registry model on its data, trained the way the miner's defaults say."""

    arch: str
    hparams: dict[str, int]
    data: ArrayDataset
    runs: int
    """Honest runs (miners)."""
    instances: int
    """Victims forged 11 ways each."""
    batch_size: int = 16  # MinerConfig.batch_size
    learning_rate: float = 3e-3  # MinerConfig.learning_rate

    def config(self, miner: bytes) -> ReplayConfig:
        """MinerConfig's defaults (λ 1, temperature 100, sealing lr 1e-2, 2000 steps)."""
        return ReplayConfig(
            arch=self.arch, hparams=self.hparams, round_seed=ROUND_SEED, miner=miner,
            learning_rate=self.learning_rate, weight_decay=0.0, batch_size=self.batch_size,
            loss="auto", watermark_lambda=1.0, watermark_temperature=100.0, autocast="none",
            seal_lr=1e-2, seal_max_steps=2000, watermark_threshold_ppm=SCHEME.threshold_ppm)

    def describe(self, epochs: int) -> str:
        steps = -(-len(self.data) // self.batch_size)
        return (f"{self.arch} {self.hparams}: {len(self.data)} samples of "
                f"{self.data.sample_shape}, batch {self.batch_size} ({steps} steps/epoch), "
                f"{epochs} epochs")


@dataclass(frozen=True)
class Bench:
    epochs: int
    threads: list[int]
    policy: TrajectoryPolicy
    cuda: bool
    spread_runs: int
    """Honest runs of which every epoch is replayed on other hardware (the spread)."""
    work: Path


@dataclass
class Honest:
    config: ReplayConfig
    run: Run
    trained_threads: int
    reports: list[tuple[str, TrajectoryReport]] = field(default_factory=list)
    """(where it was replayed: "same" / "other" thread count, "cuda"; report)."""


@dataclass
class Tally:
    caught: int = 0
    total: int = 0
    by_check: Counter[str] = field(default_factory=Counter)
    closest: float = float("inf")
    """Smallest normalised distance of a failed replay (inf: none failed at a replay)."""


def address(kind: bytes, i: int) -> bytes:
    return hashlib.sha256(kind + i.to_bytes(4, "big")).digest()[:20]


def key_of(case: ModelCase, config: ReplayConfig) -> WatermarkKey:
    """The miner's watermark key, as training/sidecars/miner_train.py derives it."""
    layer = SCHEME.layer(build_model(case.arch, case.hparams))
    return SCHEME.key(config.round_seed, config.miner, layer)


def watermark_hooks(case: ModelCase, config: ReplayConfig,
                    ) -> tuple[forgeries.ExtraLoss, forgeries.Seal]:
    """λ·embed_loss and the sealing of `config.miner`, as the miner trains and seals."""
    key = key_of(case, config)

    def term(model: nn.Module, cfg: ReplayConfig) -> Tensor:
        return cfg.watermark_lambda * embed_loss(model, key, temperature=cfg.watermark_temperature)

    def seal(model: nn.Module) -> None:
        seal_watermark(model, key, config.watermark_threshold_ppm / 1_000_000, lr=config.seal_lr,
                       max_steps=config.seal_max_steps, temperature=config.watermark_temperature)

    return term, seal


def train(b: Bench, case: ModelCase, start: nn.Module, config: ReplayConfig) -> Run:
    extra, seal = watermark_hooks(case, config)
    with tempfile.TemporaryDirectory(dir=b.work) as tmp:
        return forgeries.train_trajectory(start, case.data, config, epochs=b.epochs,
                                          extra_loss=extra, seal=seal, directory=Path(tmp))


def verify(b: Bench, case: ModelCase, forgery: Forgery, config: ReplayConfig,
           selection_seed: bytes, device: str = "cpu") -> TrajectoryReport:
    """The validator's check of a reveal by `config.miner` (its key, its hooks)."""
    extra, seal = watermark_hooks(case, config)
    checkpoints, final_model = forgery
    return verify_trajectory(
        checkpoints, final_model, case.data, arch=case.arch, hparams=case.hparams,
        round_seed=config.round_seed, miner=config.miner, extra_loss=extra, seal=seal,
        selection_seed=selection_seed, policy=b.policy, device=device)


def check_name(reason: str) -> str:
    """Which of verify_trajectory's checks a rejection came from."""
    for needle, name in (("does not replay", "replay"), ("anchored start", "anchor"),
                         ("sealed model", "final link"), ("AdamW state", "adam bound"),
                         ("another miner", "config"), ("step", "steps"),
                         ("time is up", "time")):
        if needle in reason:
            return name
    return "other"


# --------------------------------------------------------------------------------------------
# (1) honest runs, (3) their cost


def honest_runs(b: Bench, case: ModelCase) -> list[Honest]:
    """Train `case.runs` miners; check each with its own thread count (bit-exact, and the cost:
    same machine, same threads), with the next thread count, and on CUDA if present."""
    out = []
    for i in range(case.runs):
        config = case.config(address(b"miner", i))
        trained = b.threads[i % len(b.threads)]
        other = b.threads[(i + 1) % len(b.threads)]
        torch.set_num_threads(trained)
        run = train(b, case, anchored_model(case.arch, case.hparams, ROUND_SEED, config.miner),
                    config)
        honest = Honest(config, run, trained)
        seed = hashlib.sha256(b"post-reveal block" + config.miner).digest()
        honest.reports.append(("same", verify(b, case, run.forgery, config, seed)))
        torch.set_num_threads(other)
        honest.reports.append(("other", verify(b, case, run.forgery, config, seed)))
        if b.cuda:
            honest.reports.append(("cuda", verify(b, case, run.forgery, config, seed, "cuda")))
        out.append(honest)
        line = ", ".join(
            f"{where} {'ok' if r.ok else 'REJECTED'} "
            f"{max((d for _, d in r.checked), default=float('nan')):.1e}"
            for where, r in honest.reports)
        print(f"    run {i:2d}: trained x{trained} {run.train_seconds:5.1f}s, verify x{trained} "
              f"{honest.reports[0][1].seconds:4.2f}s; max distance {line}", flush=True)
    return out


def report_honest(b: Bench, runs: list[Honest], threshold: float) -> tuple[int, int]:
    """Print pass counts and the honest distance spread per kind of replay; (passed, total)
    over the replays on other hardware (another thread count, CUDA)."""
    passed = total = 0
    labels = {"same": "cpu, same thread count",
              "other": f"cpu, other thread count ({'<->'.join(map(str, b.threads))})",
              "cuda": "cuda (trained on cpu)"}
    for where, label in labels.items():
        reps = [r for h in runs for w, r in h.reports if w == where]
        if not reps:
            continue
        distances = [d for r in reps for _, d in r.checked]
        spread = "" if not distances else (
            f"; distance max {max(distances):.2e} (= {max(distances) / threshold:.1e} of the "
            f"threshold), median {statistics.median(distances):.2e}, {len(distances)} epochs")
        print(f"      {label}: {sum(r.ok for r in reps)}/{len(reps)} pass{spread}")
        if where != "same":
            passed, total = passed + sum(r.ok for r in reps), total + len(reps)
    return passed, total


def report_cost(runs: list[Honest]) -> tuple[float, float]:
    """Print verify / train at the training's own thread count; (verify s, train s)."""
    reps = [r for h in runs for w, r in h.reports if w == "same"]
    verify_s, train_s = sum(r.seconds for r in reps), sum(h.run.train_seconds for h in runs)
    replay_s = sum(r.replay_seconds for r in reps)
    print(f"      cost: verify {verify_s:.1f}s / train {train_s:.1f}s = "
          f"{100 * verify_s / train_s:.1f}% (replays {100 * replay_s / train_s:.1f}%, the rest "
          f"{100 * (verify_s - replay_s) / train_s:.1f}%: loading, anchor, sealing)")
    return verify_s, train_s


def spread(b: Bench, case: ModelCase, runs: list[Honest], threshold: float) -> None:
    """Replay EVERY epoch of the first `b.spread_runs` honest runs on other hardware and print
    the distribution of the three replay distances verify_trajectory takes the largest of:
    what thresholds.py must sit above (a spot-check sees only q epochs of a run)."""
    where = [("other", "cpu")] + ([("cuda", "cuda")] if b.cuda else [])
    for label, device in where:
        parts: dict[str, list[float]] = {"weights": [], "exp_avg": [], "exp_avg_sq": []}
        worst: list[float] = []
        for h in runs[: b.spread_runs]:
            i = b.threads.index(h.trained_threads)
            torch.set_num_threads(b.threads[(i + 1) % len(b.threads)])
            extra, _ = watermark_hooks(case, h.config)
            states = [load_checkpoint(c) for c in h.run.checkpoints]
            for begin, end in itertools.pairwise(states):
                r = replay_epoch(begin, case.data, extra_loss=extra, device=device)
                d = [normalised(l2_distance(r.weights, end.weights),
                                l2_distance(end.weights, begin.weights)),
                     normalised(l2_distance(r.exp_avg, end.exp_avg),
                                l2_distance(end.exp_avg, begin.exp_avg)),
                     normalised(l2_distance(r.exp_avg_sq, end.exp_avg_sq),
                                l2_distance(end.exp_avg_sq, begin.exp_avg_sq))]
                for name, x in zip(parts, d, strict=True):
                    parts[name].append(x)
                worst.append(max(d))
        if not worst:
            return
        what = "other thread count" if label == "other" else "cuda"
        print(f"      spread, every epoch of {min(b.spread_runs, len(runs))} run(s) on {what} "
              f"({len(worst)} epochs): {sum(x > threshold for x in worst)} above the threshold")
        for name, xs in (*parts.items(), ("largest of the three", worst)):
            print(f"        {name:20s} {quantiles(xs)}")


def quantiles(xs: list[float]) -> str:
    """Median, 90th and 99th percentile and maximum of `xs`."""
    ordered = sorted(xs)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return (f"p50 {at(0.5):.1e}  p90 {at(0.9):.1e}  p99 {at(0.99):.1e}  "
            f"max {ordered[-1]:.1e}")


# --------------------------------------------------------------------------------------------
# (2) forgeries


def forgery_builders(b: Bench, case: ModelCase, victim: Honest, j: int,
                     ) -> tuple[ReplayConfig, dict[str, Callable[[], Forgery]]]:
    """The thief's config and a builder of every forgery it can make of `victim`'s model."""
    e, n = b.epochs, len(case.data)
    thief = case.config(address(b"thief", j))
    t_extra, t_seal = watermark_hooks(case, thief)
    stolen = forgeries.steal(victim.run.final_model, thief,
                             victim_key=key_of(case, victim.config),
                             thief_key=key_of(case, thief), threshold=SCHEME.threshold)
    elsewhere: list[Run] = []

    def own_run() -> Run:  # the thief's genuine run from another start, trained once
        if not elsewhere:
            start = build_model(case.arch, case.hparams, seed=1_000_000 + j)
            elsewhere.append(train(b, case, start, thief))
        return elsewhere[0]

    builders: dict[str, Callable[[], Forgery]] = {
        "interpolated linear/zeros": lambda: forgeries.interpolated(
            stolen, thief, samples=n, epochs=e, seal=t_seal),
        "interpolated front-loaded/consistent": lambda: forgeries.interpolated(
            stolen, thief, samples=n, epochs=e, seal=t_seal, schedule="front_loaded",
            adam="consistent"),
        "fine-tuned, 1 genuine epoch": lambda: forgeries.finetuned_with_fabricated_history(
            stolen, case.data, thief, epochs=e, genuine_epochs=1, extra_loss=t_extra,
            seal=t_seal),
        "fine-tuned, 3 genuine epochs": lambda: forgeries.finetuned_with_fabricated_history(
            stolen, case.data, thief, epochs=e, genuine_epochs=min(3, e - 1),
            extra_loss=t_extra, seal=t_seal),
        "different start: own run, other seed": lambda: forgeries.different_start(
            own_run(), thief, seal=t_seal, swap_anchor=False),
        "different start: own run, anchor swapped": lambda: forgeries.different_start(
            own_run(), thief, seal=t_seal, swap_anchor=True),
        "different start: victim's run relabelled": lambda: forgeries.different_start(
            victim.run, thief, seal=t_seal, swap_anchor=False),
        "different start: victim's run, anchor swapped": lambda: forgeries.different_start(
            victim.run, thief, seal=t_seal, swap_anchor=True),
    }
    return thief, builders


def forged(b: Bench, case: ModelCase, victims: list[Honest]) -> dict[str, Tally]:
    """Build and check every forgery of every victim; a tally per class and variant."""
    tallies: dict[str, Tally] = {}
    torch.set_num_threads(b.threads[0])

    def count(name: str, forgery: Forgery, config: ReplayConfig, seed: bytes) -> None:
        report = verify(b, case, forgery, config, seed)
        tally = tallies.setdefault(name, Tally())
        tally.total += 1
        if not report.ok:
            tally.caught += 1
            tally.by_check[check_name(report.reason)] += 1
            if report.checked and check_name(report.reason) == "replay":
                tally.closest = min(tally.closest, report.checked[-1][1])

    for j, victim in enumerate(victims):
        seed = hashlib.sha256(b"post-reveal block, forgery" + j.to_bytes(4, "big")).digest()
        thief, builders = forgery_builders(b, case, victim, j)
        for name, build in builders.items():
            count(name, build(), thief, seed)
        for label, skip in (("begin", 1), ("middle", b.epochs // 2), ("end", b.epochs)):
            # The victim's own lazy run: it claims one epoch less than it shows.
            count(f"skipped epoch ({label})", forgeries.skipped_epoch(victim.run, skip=skip),
                  victim.config, seed)
        print(f"    victim {j}: {sum(t.total for t in tallies.values())} forgeries so far",
              flush=True)
    return tallies


def report_forged(tallies: dict[str, Tally], threshold: float) -> tuple[int, int]:
    """Print each forgery class's catch count and by which check; (caught, total)."""
    for name, t in tallies.items():
        checks = ", ".join(f"{k} {v}" for k, v in t.by_check.most_common())
        closest = "" if t.closest == float("inf") else \
            f"; closest failed replay {t.closest:.2g} ({t.closest / threshold:.2g}x threshold)"
        print(f"      {name:46s} caught {t.caught}/{t.total} ({checks}){closest}")
    return sum(t.caught for t in tallies.values()), sum(t.total for t in tallies.values())


# --------------------------------------------------------------------------------------------


def model_cases(args: argparse.Namespace) -> list[ModelCase]:
    out = []
    if args.runs:
        out.append(ModelCase("unet2d", {"depth": 3, "base_width": 8},
                             make_vessels_2d(args.samples, args.size, seed=7), args.runs,
                             args.instances))
    if args.cnn_runs:
        try:
            digits = load_digits_dataset()
        except DataError as exc:
            print(f"(cnn skipped: {exc})")
        else:
            k = args.cnn_samples
            subset = ArrayDataset(digits.inputs[:k], digits.targets[:k], "classification", 10)
            out.append(ModelCase("cnn", {"depth": 2, "base_width": 64}, subset, args.cnn_runs,
                                 args.cnn_instances))
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="a 1-2 minute smoke run")
    add("--epochs", type=int, default=48,
        help="epochs per run (the demo miner trains about 50 in its 60 s TRAIN)")
    add("--runs", type=int, default=16, help="honest unet2d runs (0: no unet2d)")
    add("--instances", type=int, default=6, help="unet2d victims, each forged 11 ways")
    add("--size", type=int, default=48, help="unet2d image side (a multiple of 8)")
    add("--samples", type=int, default=72, help="unet2d training images (the demo's 72)")
    add("--cnn-runs", type=int, default=8, help="honest cnn runs (0: no cnn)")
    add("--cnn-instances", type=int, default=4, help="cnn victims, each forged 11 ways")
    add("--cnn-samples", type=int, default=512, help="digits used to train the cnn")
    add("--threads", default="1,2", help="thread counts; each run is replayed with the next")
    add("--policy", default="1,2,1", help="q_largest,q_anomalous,q_random")
    add("--spread-runs", type=int, default=2,
        help="honest runs per model of which every epoch is replayed on other hardware")
    add("--no-cuda", action="store_true", help="no CUDA replays even if a GPU is present")
    add("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.runs, args.instances, args.size, args.samples = 8, 3, 1, 16, 32
        args.cnn_runs, args.cnn_instances, args.cnn_samples = 2, 1, 128
        args.spread_runs = 1
    args.threads = [int(t) for t in args.threads.split(",")]
    if len(args.threads) < 2 or len(set(args.threads)) < 2:
        parser.error("--threads needs two different counts: each run is replayed with another")
    args.policy = [int(q) for q in args.policy.split(",")]
    if len(args.policy) != 3:
        parser.error("--policy is q_largest,q_anomalous,q_random")
    args.instances = min(args.instances, args.runs)
    args.cnn_instances = min(args.cnn_instances, args.cnn_runs)
    return args


def main() -> None:
    args = parse_args()
    warm_up_torch()  # torch._dynamo's import (seconds) must not land in the first run's timing
    t0 = time.perf_counter()
    honest, forged_, seconds = [0, 0], [0, 0], [0.0, 0.0]
    q_largest, q_anomalous, q_random = args.policy
    policy = TrajectoryPolicy(q_random=q_random, q_largest=q_largest, q_anomalous=q_anomalous)
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="dlbc-bench-pol-") as tmp:
        b = Bench(args.epochs, args.threads, policy,
                  torch.cuda.is_available() and not args.no_cuda, args.spread_runs, Path(tmp))
        for case in model_cases(args):
            threshold = policy.threshold or threshold_for(case.arch, "none")
            print(f"{case.describe(b.epochs)}; replays q_largest {q_largest}, q_anomalous "
                  f"{q_anomalous}, q_random {q_random}, threshold {threshold:g}")
            print(f"  (1) {case.runs} honest runs")
            runs = honest_runs(b, case)
            passed, total = report_honest(b, runs, threshold)
            honest = [honest[0] + passed, honest[1] + total]
            spread(b, case, runs, threshold)
            verify_s, train_s = report_cost(runs)
            seconds = [seconds[0] + verify_s, seconds[1] + train_s]
            print(f"  (2) forgeries of {case.instances} victims' models")
            caught, total = report_forged(forged(b, case, runs[: case.instances]), threshold)
            forged_ = [forged_[0] + caught, forged_[1] + total]
    print(f"({time.perf_counter() - t0:.0f} s in all)")
    cost = 100 * seconds[0] / seconds[1] if seconds[1] else float("nan")
    print(f"honest pass {honest[0]}/{honest[1]}, forged caught {forged_[0]}/{forged_[1]}, "
          f"verify cost {cost:.1f}% of training")


if __name__ == "__main__":
    main()
