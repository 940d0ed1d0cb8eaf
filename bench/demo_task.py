"""Offline trial of the demo task: does ten times the training budget win? (issue 14 part 2)

For K task seeds, the demo task exactly as a publisher prepares it (`task_prep.DemoDataConfig`
defaults, task k seeded `seed + k`, the same train/test split) is trained twice the way a miner
trains it (`MinerConfig`'s batch size, learning rate, watermark λ and temperature; the chain's
genesis watermark scheme; `seal_watermark` afterwards): a strong budget (55 s, what the demo's
miner-1 gets of a 60 s TRAIN phase) and a weak one (5.5 s, miner-2's). Both run on one torch
thread each, two processes at a time, so every run shares the machine with another training run
as the devnet's two miners do. Each sealed model is scored on the test split like a validator
scores it (`trainer.evaluate`, Dice in ppm); the strong run's checkpoints are also scored at
5, 10, 20, 40 and 55 s (the last epoch that ended by then).

Last line: `offline win rate of the 10x budget: XX% over K seeds`. Goal: >= 95 % (the devnet's
goal is >= 90 %). Timings depend on the machine and its load; about 5 minutes for 10 seeds on
2 cores.

Usage: python bench/demo_task.py [--seeds K] [--strong S] [--weak S] [--jobs N] [--workdir DIR]
                                [--first-seed K0] [--curve-at 5,10,20,40,55]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

# Run as `python bench/demo_task.py`, this file's directory comes first on sys.path and
# bench/training.py would shadow the `training` package; drop that entry (no effect under -m).
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

CURVE_SECONDS = (5.0, 10.0, 20.0, 40.0, 55.0)
"""Default `--curve-at`: where the strong run's learning curve is printed."""
STRONG, WEAK = "strong", "weak"


@dataclass
class Run:
    """One budgeted training run of one task seed, sealed and scored."""

    seed: int
    role: str
    epochs: int
    seconds: float
    score_ppm: int
    watermark_ok: bool
    seal_steps: int
    curve: dict[float, int] = field(default_factory=dict)
    """Strong runs: score (ppm) of the last checkpoint that ended by each `--curve-at` second."""


def _init_worker() -> None:
    """One torch thread per process, and torch's one-time optimizer import paid up front (a
    miner does the same at setup: it would otherwise eat seconds of the first budget)."""
    import torch

    torch.set_num_threads(1)
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)]).zero_grad()


def train_one(seed: int, role: str, budget: float, workdir: Path,
              curve_at: tuple[float, ...] = CURVE_SECONDS) -> Run:
    """Train, seal and score the demo task of `seed` within `budget` seconds as miner `role`."""
    from training.learning_curve import score_checkpoint
    from training.models import build_model
    from training.sidecars.miner import MinerConfig
    from training.sidecars.scheme import WatermarkScheme
    from training.sidecars.sealing import seal_watermark
    from training.sidecars.task_prep import DemoDataConfig, demo_dataset
    from training.trainer import TrainConfig, evaluate, train
    from watermark import embed_loss

    base = DemoDataConfig()
    cfg = DemoDataConfig(**{**base.__dict__, "seed": base.seed + seed})  # the publisher's task k
    train_set, test_set = demo_dataset(cfg).split(cfg.test_fraction, seed=cfg.seed)
    mcfg = MinerConfig()
    miner = 0 if role == STRONG else 1  # the devnet seeds miner i with i
    round_no = seed + 1
    model = build_model(cfg.architecture, cfg.hparams, seed=miner + round_no)
    scheme = WatermarkScheme.genesis_default()
    round_seed = hashlib.sha256(f"demo-task-{seed}".encode()).digest()
    address = hashlib.sha256(role.encode()).digest()[:20]
    key = scheme.key(round_seed, address, scheme.layer(model))
    ckpt_dir = workdir / f"seed-{seed}-{role}"
    lam, temp = mcfg.watermark_lambda, mcfg.watermark_temperature
    result = train(model, train_set, TrainConfig(
        budget_seconds=budget, batch_size=mcfg.batch_size, learning_rate=mcfg.learning_rate,
        seed=miner + round_no, device="cpu", checkpoint_dir=ckpt_dir, progress=False),
        extra_loss=lambda m: lam * embed_loss(m, key, temperature=temp))
    det, steps = seal_watermark(model, key, scheme.threshold, lr=mcfg.seal_learning_rate,
                                max_steps=mcfg.seal_max_steps, temperature=temp)
    run = Run(seed, role, result.epochs, result.wall_seconds,
              evaluate(model, test_set, cfg.metric), det.ok, steps)
    if role == STRONG:
        for t in curve_at:
            done = [i for i, e in enumerate(result.epoch_elapsed) if e <= t]
            if done:
                run.curve[t] = score_checkpoint(result.checkpoints[done[-1]].path, test_set,
                                                cfg.architecture, cfg.hparams, cfg.metric)
    return run


def _line(strong: Run, weak: Run, curve_at: tuple[float, ...]) -> str:
    won = strong.score_ppm > weak.score_ppm
    curve = "  ".join(f"{t:g}s {strong.curve[t] / 1e6:.3f}" if t in strong.curve
                      else f"{t:g}s -" for t in curve_at)
    marks = "" if strong.watermark_ok and weak.watermark_ok else "  WATERMARK BELOW THRESHOLD"
    return (f"seed {strong.seed:3d}: strong {strong.score_ppm / 1e6:.4f} ({strong.epochs} ep, "
            f"{strong.seconds:.1f}s, seal {strong.seal_steps})  weak {weak.score_ppm / 1e6:.4f} "
            f"({weak.epochs} ep, {weak.seconds:.1f}s, seal {weak.seal_steps})  "
            f"{'win ' if won else 'LOSS'}  curve: {curve}{marks}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=10, help="task seeds to try (default 10)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--strong", type=float, default=55.0, help="strong budget, seconds")
    p.add_argument("--weak", type=float, default=5.5, help="weak budget, seconds")
    p.add_argument("--jobs", type=int, default=2, help="training processes at once (default 2)")
    p.add_argument("--workdir", type=Path, default=None, help="checkpoints (default: a temp dir)")
    p.add_argument("--curve-at", default=",".join(f"{t:g}" for t in CURVE_SECONDS),
                   help="seconds at which to print the strong run's curve (comma-separated)")
    args = p.parse_args(argv)
    curve_at = tuple(float(t) for t in args.curve_at.split(","))
    from training.sidecars.task_prep import DemoDataConfig

    cfg = DemoDataConfig()
    print(f"demo task: {cfg.samples} images {cfg.image_size}x{cfg.image_size} ({cfg.generator}), "
          f"{cfg.architecture} {cfg.hparams}, metric {cfg.metric}; budgets strong "
          f"{args.strong:g}s / weak {args.weak:g}s, {args.jobs} process(es), 1 torch thread each",
          flush=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="demo-task-") as tmp:
        workdir = args.workdir or Path(tmp)
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn"),
                                 initializer=_init_worker) as pool:
            futures: dict[tuple[int, str], Future[Run]] = {}
            for s in seeds:  # strong and weak of one seed side by side, as on the devnet
                futures[s, STRONG] = pool.submit(train_one, s, STRONG, args.strong, workdir,
                                                 curve_at)
                futures[s, WEAK] = pool.submit(train_one, s, WEAK, args.weak, workdir, curve_at)
            wins = 0
            for s in seeds:
                strong, weak = futures[s, STRONG].result(), futures[s, WEAK].result()
                wins += strong.score_ppm > weak.score_ppm
                print(_line(strong, weak, curve_at), flush=True)
    print(f"({time.monotonic() - t0:.0f}s in all)")
    print(f"offline win rate of the 10x budget: {100 * wins / args.seeds:.0f}% over "
          f"{args.seeds} seeds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
