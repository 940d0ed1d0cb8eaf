"""Watermark bench (issue 4; paper §V-C, Fig. 14): embedding cost, attack cost, task cost.

Small U-Net (registry ``unet2d``, depth 2, base width 16; watermark layer ``bottom.2.weight``,
1152 coordinates) on generated 32x32 segmentation data, CPU, one thread. For each matrix type:

1. an honest miner trains from scratch with λ·E_R for ``--epochs`` epochs; we record the first
   step at which its watermark is detected (every bit > 0.9999) and the final Dice against a
   baseline trained identically without the watermark, in the same run;
2. an attacker steals the final model and runs (a) the paper's removal attack (negated victim
   regularizer + own regularizer), (b) an overwrite (own regularizer only), (c) the zero-epoch
   least-squares forgery followed by overwrite fine-tuning until its Dice is back within one point
   of the stolen model's. Attackers use the miner's own optimizer, learning rate, λ and
   temperature: nothing is tuned to make them weak.

Also: the regularizer's step-time overhead (same model, interleaved timing blocks) and the time
to detect a watermark in a 270 MB safetensors file against hashing that file (which a validator
does anyway, docs/artifacts.md). Writes ``watermark.png`` (Fig. 14 analogue) and ``watermark.json``
under ``--out``. The loop mirrors training/trainer.py (AdamW, lr 1e-3, ``compute_loss("auto")``,
batch 16) but is local because the attack harness needs to look at the weights after every step.

Run: ``.venv/bin/python bench/watermark.py [--out bench/out] [--epochs 12] [--quick]``
(about 2 minutes on one CPU thread).

Measured (12 honest epochs x 16 steps; baseline Dice 0.9921; temperature 100, random 10)::

    matrix  embed ep  Dice Δpt  removal ep (x)   overwrite ep (x)  forge Dice  forge+ft ep
    direct    2.12     -0.24    13.81 (6.5x)     13.12 (6.2x)       0.9693       1.00
    diff      1.50     -0.08    15.94 (10.6x)    15.94 (10.6x)      0.9769       1.50
    random    2.62     -0.12     4.44 (1.7x)      4.38 (1.7x)       0.9464       1.50
    step overhead within noise (-0.3%; regularizer alone 0.19 ms = 0.4% of a step);
    detect_file on 270 MB: 40 ms (SHA-256 of the same file: 167 ms)

What these say. Under Adam a margin moves at most about gain·lr per step in either direction, so
the attacker undoes the watermark about as fast as the miner built it: the paper's attacks cost
roughly the honest run's length, i.e. >= 10x the embedding epochs only once the miner trains
~10x longer than it takes to embed. That is why the regularizer has a temperature (embed.py):
plain BCE stops deepening at ~logit(0.9999) and every attack then succeeds within an epoch.
"diff" is the default: it costs the attacker the most epochs (removal 15.9, overwrite 15.9 vs
1.5 to embed, 10.6x) and the least accuracy (-0.08 Dice points); "direct" is second (13.8 / 13.1
vs 2.1, 6.5x; -0.24 points). "diff" needs 2·n_bits coordinates per output channel (512 for 256
bits), hence the base width 16 here and in the demo task. Against an attacker who uses the
public key directly (``forge``: one least-squares solve, then < 2 epochs of fine-tuning to
regain Dice) no matrix holds: the key being public is the weakness, not the matrix.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder leads sys.path and its own name would shadow the
# `watermark` package (and bench/training.py the `training` one): search the repo root instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse
import copy
import hashlib
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

import watermark as wm
from training.data import ArrayDataset, make_segmentation_2d
from training.metrics import dice
from training.models import build_model
from training.trainer import compute_loss
from watermark.attacks import AttackTrace, ExtraLoss, StepCallback, forge, min_margin, run_attack
from watermark.embed import DEFAULT_TEMPERATURE

HPARAMS = {"depth": 2, "base_width": 16}
BATCH = 16
LR = 1e-3
LAM = 1.0
SEED_R = hashlib.sha256(b"bench round seed").digest()
HONEST = hashlib.sha256(b"honest miner").digest()[:20]
THIEF = hashlib.sha256(b"attacker miner").digest()[:20]


class Loop:
    """AdamW steps over a fixed data set with a seeded shuffle; one optimizer per model."""

    def __init__(self, data: ArrayDataset, seed: int) -> None:
        self.x = torch.from_numpy(data.inputs)  # (N, 1, 32, 32)
        self.y = torch.from_numpy(data.targets)  # (N, 32, 32)
        self.seed = seed
        self.steps_per_epoch = len(data) // BATCH

    def __call__(
        self, model: nn.Module, extra: ExtraLoss | None, n: int, after_step: StepCallback
    ) -> None:
        opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
        shuffle = torch.Generator().manual_seed(self.seed)
        model.train()
        i = 0
        while i < n:
            order = torch.randperm(len(self.x), generator=shuffle)
            for s in range(self.steps_per_epoch):
                if i >= n:
                    return
                idx = order[s * BATCH : (s + 1) * BATCH]
                loss = compute_loss(model(self.x[idx]), self.y[idx], "segmentation", "auto")
                if extra is not None:
                    loss = loss + extra(model)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                after_step(i)
                i += 1


def evaluate(model: nn.Module, data: ArrayDataset) -> float:
    model.eval()
    with torch.no_grad():
        pred = (model(torch.from_numpy(data.inputs))[:, 0] > 0).long().numpy()  # (N, H, W)
    model.train()
    return float(dice(pred, data.targets))


@dataclass
class MatrixResult:
    matrix: str
    embed_epochs: float | None
    honest_dice: float
    honest_final_min_margin: float
    removal: dict[str, float | None]
    overwrite: dict[str, float | None]
    forge: dict[str, float | None]
    honest_curve: list[float] = field(repr=False)
    honest_margin_curve: list[float] = field(repr=False)
    removal_victim_margin_curve: list[float] = field(repr=False)
    overwrite_victim_margin_curve: list[float] = field(repr=False)
    removal_curve: list[float] = field(repr=False)
    overwrite_curve: list[float] = field(repr=False)
    removal_victim_curve: list[float] = field(repr=False)


def summarize(trace: AttackTrace, dice_after: float) -> dict[str, float | None]:
    return {
        "victim_removed_epochs": trace.epochs(trace.step_victim_removed),
        "attacker_detected_epochs": trace.epochs(trace.step_attacker_detected),
        "success_epochs": trace.epochs(trace.step_success),
        "dice_after": dice_after,
    }


def bench_matrix(
    matrix: str, loop: Loop, test: ArrayDataset, epochs: int, attack_epochs: int, temperature: float
) -> MatrixResult:
    spe = loop.steps_per_epoch
    model = build_model("unet2d", HPARAMS, seed=0)
    layer = wm.default_layer(model, matrix=matrix)
    victim = wm.derive_key(SEED_R, HONEST, layer=layer, matrix=matrix)
    thief = wm.derive_key(SEED_R, THIEF, layer=layer, matrix=matrix)

    honest_conf = [wm.detect(model, victim).min_confidence]
    honest_margin = [min_margin(model, victim)]
    first: list[int] = []

    def watch(i: int) -> None:
        det = wm.detect(model, victim)
        honest_conf.append(det.min_confidence)
        honest_margin.append(min_margin(model, victim))
        if det.ok and not first:
            first.append(i + 1)

    loop(
        model,
        lambda m: LAM * wm.embed_loss(m, victim, temperature=temperature),
        epochs * spe,
        watch,
    )
    honest_dice = evaluate(model, test)
    final_margin = float(wm.signed_margins(wm.layers.layer_from(model, layer), victim).min())

    traces = {}
    for mode in ("removal", "overwrite"):
        stolen = copy.deepcopy(model)
        traces[mode] = run_attack(
            stolen,
            victim,
            thief,
            loop,
            mode=mode,  # type: ignore[arg-type]
            lam=LAM,
            max_steps=attack_epochs * spe,
            steps_per_epoch=spe,
            temperature=temperature,
        )
        traces[mode + "_dice"] = evaluate(stolen, test)  # type: ignore[assignment]

    # Strongest attacker: solve for the weights, then fine-tune its own key until Dice recovers.
    stolen = copy.deepcopy(model)
    norm = forge(stolen, victim, thief)
    forged_dice = evaluate(stolen, test)
    forged_ok = (not wm.detect(stolen, victim).ok) and wm.detect(stolen, thief).ok
    recovered: list[int] = []

    class _Done(Exception):
        pass

    def until_recovered(i: int) -> None:
        if (
            (i + 1) % max(1, spe // 4) == 0
            and evaluate(stolen, test) >= honest_dice - 0.01
            and not wm.detect(stolen, victim).ok
            and wm.detect(stolen, thief).ok
        ):
            recovered.append(i + 1)
            raise _Done

    if forged_dice >= honest_dice - 0.01 and forged_ok:
        recovered.append(0)
    else:
        try:
            loop(
                stolen,
                lambda m: LAM * wm.embed_loss(m, thief, temperature=temperature),
                attack_epochs * spe,
                until_recovered,
            )
        except _Done:
            pass
    return MatrixResult(
        matrix=matrix,
        embed_epochs=first[0] / spe if first else None,
        honest_dice=honest_dice,
        honest_final_min_margin=final_margin,
        removal=summarize(traces["removal"], traces["removal_dice"]),  # type: ignore[arg-type]
        overwrite=summarize(traces["overwrite"], traces["overwrite_dice"]),  # type: ignore[arg-type]
        forge={
            "delta_norm": norm,
            "dice_right_after": forged_dice,
            "owner_swapped_at_0_epochs": float(forged_ok),
            "epochs_to_recover_dice": recovered[0] / spe if recovered else None,
        },
        honest_curve=honest_conf,
        honest_margin_curve=honest_margin,
        removal_victim_margin_curve=list(traces["removal"].victim_min_margin),  # type: ignore[union-attr]
        overwrite_victim_margin_curve=list(traces["overwrite"].victim_min_margin),  # type: ignore[union-attr]
        removal_curve=list(traces["removal"].attacker_min_conf),  # type: ignore[union-attr]
        overwrite_curve=list(traces["overwrite"].attacker_min_conf),  # type: ignore[union-attr]
        removal_victim_curve=list(traces["removal"].victim_min_conf),  # type: ignore[union-attr]
    )


def step_overhead(
    loop: Loop, matrix: str, temperature: float, blocks: int
) -> tuple[float, float, float]:
    """Seconds per step without and with the regularizer, and for the regularizer alone.

    Whole steps run in interleaved blocks of 10 and each side keeps its fastest block: on a
    shared machine other load only ever adds time, so the minimum is the least noisy estimate.
    The regularizer alone (forward + backward, best of 200) is a second, load-robust estimate.
    """
    model = build_model("unet2d", HPARAMS, seed=0)
    key = wm.derive_key(SEED_R, HONEST, layer=wm.default_layer(model, matrix=matrix), matrix=matrix)

    def reg(m: nn.Module) -> torch.Tensor:
        return LAM * wm.embed_loss(m, key, temperature=temperature)

    plain_t, reg_t = [], []
    loop(model, reg, 5, lambda i: None)  # warm-up (allocator, caches)
    for b in range(blocks):
        for extra, sink in (
            ((None, plain_t), (reg, reg_t)) if b % 2 else ((reg, reg_t), (None, plain_t))
        ):
            t0 = time.perf_counter()
            loop(model, extra, 10, lambda i: None)
            sink.append((time.perf_counter() - t0) / 10)
    alone = []
    for _ in range(200):
        t0 = time.perf_counter()
        reg(model).backward()
        alone.append(time.perf_counter() - t0)
    return min(plain_t), min(reg_t), min(alone)


def detection_speed(tmp: Path, matrix: str) -> tuple[float, float, int]:
    """(detect_file seconds, SHA-256 of the file seconds, file bytes) for a ~270 MB model."""
    from safetensors.torch import save_file

    model = build_model("unet2d", {"depth": 4, "base_width": 64}, seed=0)  # ~31 M params
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    sd["pad.weight"] = torch.zeros(270_000_000 // 4 - sum(v.numel() for v in sd.values()))
    path = tmp / "big.safetensors"
    save_file(sd, str(path))
    layer = wm.default_layer(model, matrix=matrix)
    key = wm.derive_key(SEED_R, HONEST, layer=layer, matrix=matrix)
    det_t, hash_t = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        wm.detect_file(path, key)
        det_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        h = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
        hash_t.append(time.perf_counter() - t0)
    return min(det_t), min(hash_t), path.stat().st_size


def plot(results: list[MatrixResult], spe: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(results), figsize=(5 * len(results), 7.5), squeeze=False)
    for ax, r in zip(axes[0], results, strict=True):
        for curve, label, style in (
            (r.honest_curve, "honest miner (own key, from scratch)", "-"),
            (r.removal_curve, "attacker: removal (own key)", "--"),
            (r.overwrite_curve, "attacker: overwrite (own key)", ":"),
            (r.removal_victim_curve, "victim key during removal", "-."),
        ):
            ax.plot(np.arange(len(curve)) / spe, curve, style, label=label)
        ax.axhline(0.9999, color="grey", lw=0.8)
        ax.set_title(f"matrix={r.matrix}")
        ax.set_xlabel("epochs of training")
        ax.set_ylabel("min bit confidence")
        ax.set_ylim(-0.02, 1.02)
    # Second row: why removal is slow — the honest miner's margins keep growing for the whole
    # run, and the attacker must walk every bit's margin back below logit(0.9999).
    for ax, r in zip(axes[1], results, strict=True):
        for curve, label, style in (
            (r.honest_margin_curve, "honest miner, own key", "-"),
            (r.removal_victim_margin_curve, "victim key under removal", "-."),
            (r.overwrite_victim_margin_curve, "victim key under overwrite", ":"),
        ):
            ax.plot(np.arange(len(curve)) / spe, curve, style, label=label)
        ax.axhline(wm.threshold_margin(0.9999), color="grey", lw=0.8)
        ax.set_yscale("symlog", linthresh=10.0)
        ax.set_xlabel("epochs of training")
        ax.set_ylabel("min signed logit (threshold 9.21)")
    axes[0][0].legend(fontsize=7, loc="lower right")
    axes[1][0].legend(fontsize=7, loc="lower left")
    fig.suptitle("Watermark confidence: honest vs attacking miner (cf. paper Fig. 14)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    parser.add_argument("--epochs", type=int, default=12, help="honest training epochs")
    parser.add_argument("--attack-epochs", type=int, default=30, help="cap on attack epochs")
    parser.add_argument("--matrices", default=",".join(wm.MATRIX_TYPES))
    parser.add_argument(
        "--temperature",
        type=float,
        default=DEFAULT_TEMPERATURE,
        help="embedding temperature for direct and diff",
    )
    parser.add_argument(
        "--random-temperature",
        type=float,
        default=10.0,
        help="random rows are not orthogonal: a near-linear loss (high "
        "temperature) lets cross-talk flip bits, so it gets its own",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny run to check the script")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.epochs, args.attack_epochs = 3, 3
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    train_set, test_set = make_segmentation_2d(320, 32, seed=1).split(0.2, seed=0)
    loop = Loop(train_set, seed=123)
    spe = loop.steps_per_epoch
    base = build_model("unet2d", HPARAMS, seed=0)
    loop(base, None, args.epochs * spe, lambda i: None)
    base_dice = evaluate(base, test_set)
    print(f"baseline (no watermark): {args.epochs} epochs x {spe} steps, Dice {base_dice:.4f}")

    results = []
    for matrix in args.matrices.split(","):
        temp = args.random_temperature if matrix == "random" else args.temperature
        r = bench_matrix(matrix, loop, test_set, args.epochs, args.attack_epochs, temp)
        results.append(r)
        print(
            f"[{matrix}] embed {r.embed_epochs} ep | Dice {r.honest_dice:.4f} "
            f"({100 * (r.honest_dice - base_dice):+.2f} pt) | final min margin "
            f"{r.honest_final_min_margin:.1f} | removal {r.removal} | overwrite {r.overwrite} "
            f"| forge {r.forge}",
            flush=True,
        )

    default = wm.DEFAULT_MATRIX
    plain, with_reg, alone = step_overhead(loop, default, args.temperature, 6 if args.quick else 16)
    with tempfile.TemporaryDirectory() as tmp:
        det_s, hash_s, size = detection_speed(Path(tmp), default)
    plot(results, spe, args.out / "watermark.png")

    print()
    print(
        f"{'matrix':8} {'embed ep':>9} {'Dice Δpt':>9} {'removal ep':>11} {'(x embed)':>9} "
        f"{'overwrite ep':>13} {'(x embed)':>9} {'victim gone':>12} {'forge Dice':>11} "
        f"{'forge+ft ep':>12}"
    )

    def fmt(v: float | None) -> str:
        return "never" if v is None else f"{v:.2f}"

    def ratio(a: float | None, b: float | None) -> str:
        return "-" if a is None or not b else f"{a / b:.1f}x"

    for r in results:
        rm, ow = r.removal, r.overwrite
        print(
            f"{r.matrix:8} {fmt(r.embed_epochs):>9} {100 * (r.honest_dice - base_dice):>+9.2f} "
            f"{fmt(rm['success_epochs']):>11} {ratio(rm['success_epochs'], r.embed_epochs):>9} "
            f"{fmt(ow['success_epochs']):>13} {ratio(ow['success_epochs'], r.embed_epochs):>9} "
            f"{fmt(ow['victim_removed_epochs']):>12} {r.forge['dice_right_after']:>11.4f} "
            f"{fmt(r.forge['epochs_to_recover_dice']):>12}"
        )
    print(
        f"step time: {1e3 * plain:.2f} ms plain, {1e3 * with_reg:.2f} ms with regularizer "
        f"({default}): overhead {100 * (with_reg / plain - 1):+.2f}%; regularizer alone "
        f"{1e3 * alone:.3f} ms = {100 * alone / plain:.2f}% of a plain step"
    )
    print(
        f"detect_file on {size / 1e6:.0f} MB safetensors: {1e3 * det_s:.1f} ms; SHA-256 of the "
        f"file {1e3 * hash_s:.1f} ms; ratio detect/hash {det_s / hash_s:.3f}"
    )
    print(
        f"total bench time {time.perf_counter() - t_start:.0f} s; plot: {args.out / 'watermark.png'}"
    )
    summary = {
        "baseline_dice": base_dice,
        "epochs": args.epochs,
        "steps_per_epoch": spe,
        "temperature": args.temperature,
        "lambda": LAM,
        "gain": wm.DEFAULT_GAIN,
        "step_seconds_plain": plain,
        "step_seconds_with_regularizer": with_reg,
        "regularizer_seconds_alone": alone,
        "detect_file_seconds": det_s,
        "sha256_file_seconds": hash_s,
        "file_bytes": size,
        "results": [
            {k: v for k, v in asdict(r).items() if not k.endswith("curve")} for r in results
        ],
    }
    (args.out / "watermark.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
