"""Sealing a miner's watermark after training, so every bit clears the chain's threshold
(docs/watermark.md). Its own module: the miner calls it after training, tests call it to make
watermarked models without a chain."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from watermark import Detection, WatermarkKey


def seal_watermark(model: nn.Module, key: WatermarkKey, threshold: float, *, lr: float = 1e-2,
                   max_steps: int = 2000, check_every: int = 10, margin: float = 0.5,
                   temperature: float = 100.0) -> tuple[Detection, int]:
    """Finish embedding: E_R-only Adam steps on the key's layer until `detect` passes.

    Why: the trainer's λ·E_R term (paper Eq. 7) embeds the bits during training, but a short
    TRAIN phase on a small set gives few optimizer steps, and docs/watermark.md asks every one of
    the 256 bits to clear 0.9999. A few dozen steps on that one layer (milliseconds; measured about
    half a Dice point on the demo task) close the gap. The target is tightened by `margin`
    of the remaining distance to 1 so that float rounding between the miner's torch and the
    validator's numpy detection never flips the verdict. Returns (detection at the chain
    threshold, steps taken).
    """
    import torch

    from watermark import detect

    target = threshold + (1.0 - threshold) * margin
    det = detect(model, key, threshold=target)
    steps = 0
    if not det.ok:
        from watermark import embed_loss

        param = dict(model.named_parameters())[key.layer]
        opt = torch.optim.Adam([param], lr=lr)
        while steps < max_steps:
            loss = embed_loss(model, key, temperature=temperature)
            opt.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            opt.step()
            steps += 1
            if steps % check_every == 0 and detect(model, key, threshold=target).ok:
                break
        model.zero_grad(set_to_none=True)
    return detect(model, key, threshold=threshold), steps
