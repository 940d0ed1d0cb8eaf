"""Acceptance thresholds of a replayed epoch, per architecture and autocast, from measurements.

docs/proof_of_learning.md "Honest across hardware". A replay is accepted when its normalised
distance (distance.py: ||replayed - checkpoint_i|| / ||checkpoint_i - checkpoint_{i-1}||, the
largest over the weights and both AdamW moments) is at most the threshold. The threshold sits in
the gap between what honest replays on other hardware give and what wrong transitions give.

How the float32 ("none") rows were measured (helper A, issue 15; CPU, torch 2.13, on a shared
2-core box): a miner's run (anchored start, per-epoch seeds, the watermark term at lambda 1
with a 64-bit key, replayable checkpoints) trained with torch.set_num_threads(T) and every epoch
replayed with `replay.replay_epoch` on T threads and on the other of 1 and 2 threads; then
the same for wrong transitions: the replay of epoch i held against checkpoint i+1, and a
linear interpolation between the run's own epoch 0 and epoch E (a forger's most favourable
line: it follows the real trajectory) replayed link by link. Largest honest, smallest forged:

  arch (hparams)        data, N, batch -> steps/epoch, E   honest same T   honest 1<->2 threads   forged (wrong / interpolated)
  unet2d (d3, w8)       vessels 32^2, 48, 8 -> 6, 10       0.0             5.3e-4                 1.0 / 0.67
  unet2d (d3, w8)       vessels 80^2, 72, 16 -> 5, 10      0.0             2.9e-3                 1.0 / 0.48
  unet2d (d3, w8)       vessels 32^2, 128, 8 -> 16, 6      0.0             5.6e-3                 1.0 / 0.71
  unet2d (d3, w8)       vessels 32^2, 256, 8 -> 32, 4      0.0             4.5e-2                 1.0 / 0.80
  unet2d (d2, w16)      vessels 32^2, 64, 8 -> 8, 8        0.0             4.4e-6                 1.0 / 0.65
  fcn (d3, w8)          vessels 32^2, 48, 8 -> 6, 8        0.0             1.1e-6                 1.0 / 0.37
  unet3d (d2, w4)       shapes 16^3, 24, 8 -> 3, 6         0.0             1.4e-6                 1.0 / 0.51
  cnn (d2, w16)         digits 8^2, 128, 16 -> 8, 10       0.0             3.3e-7                 1.0 / 0.10
  cnn (d2, w16)         digits 8^2, 1024, 16 -> 64, 6      0.0             6.6e-7                 1.0 / 0.23

On one thread count CPU float32 is bit-exact (0.0). Across thread counts the U-Nets' error
grows with the steps of an epoch and jumps in some epochs (a max-pool or ReLU tie that rounding
tips the other way reroutes a gradient): 32 steps gave 0.045 in one epoch and ~1e-6 in the next.
So the U-Net/FCN rows take 0.15, about 3x above the worst honest epoch seen and 2.5-7x below
the forged ones; the cnn, whose error stays ~1e-6, takes 0.02 (5x below its interpolation).
Epochs of many more steps than 32 on a U-Net may need a replay on the miner's thread count.

The "bf16" rows (CUDA autocast, replayed on CUDA with bf16 or on a CPU in float32) are NOT
measured: no GPU was available. They are set conservatively at twice the float32 rows, which
keeps them below the smallest forged distance measured; CPU-vs-GPU float32 replays (TF32 in
cuDNN convolutions) are not measured either.
"""

from __future__ import annotations

from collections.abc import Mapping

THRESHOLDS: Mapping[tuple[str, str], float] = {
    ("unet2d", "none"): 0.15,
    ("unet3d", "none"): 0.15,
    ("fcn", "none"): 0.15,
    ("cnn", "none"): 0.02,
    # Not measured (no GPU): see the module docstring.
    ("unet2d", "bf16"): 0.3,
    ("unet3d", "bf16"): 0.3,
    ("fcn", "bf16"): 0.3,
    ("cnn", "bf16"): 0.04,
}
"""(registry architecture, ReplayConfig.autocast) -> largest accepted normalised distance."""


def threshold_for(arch: str, autocast: str) -> float:
    """The largest normalised replay distance accepted for `arch` trained under `autocast`."""
    try:
        return THRESHOLDS[(arch, autocast)]
    except KeyError:
        raise ValueError(f"no proof-of-learning threshold for {arch!r} under autocast "
                         f"{autocast!r}") from None
