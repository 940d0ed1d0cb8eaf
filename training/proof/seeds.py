"""Seeds of a replayable training run, derived from (round seed, miner address) alone.

docs/proof_of_learning.md "Anchored start" and "Replayable steps": a miner's initial weights and
each epoch's data order come from the round's seed (a block hash nobody chose) and the miner's
own address, so a validator rebuilds epoch 0 exactly and replays any epoch, and a trajectory
cannot start from somebody else's model. Each seed has its own domain-separation tag, so no
seed of one kind equals a seed of another.
"""

from __future__ import annotations

import hashlib

from torch import nn

from training.models import HParams, build_model

_INIT_TAG = b"dlbc/pol/init\x00"
_EPOCH_TAG = b"dlbc/pol/epoch\x00"
_SEED_MASK = (1 << 63) - 1  # torch.manual_seed takes up to 64 bits; 63 stay clear of sign issues


def _seed(preimage: bytes) -> int:
    return int.from_bytes(hashlib.sha256(preimage).digest()[:8], "big") & _SEED_MASK


def anchor_seed(round_seed: bytes, miner: bytes) -> int:
    """The seed of the initial weights of `miner`'s model in the round seeded `round_seed`."""
    return _seed(_INIT_TAG + round_seed + miner)


def epoch_seed(round_seed: bytes, miner: bytes, epoch: int) -> int:
    """The seed of epoch `epoch`'s (1-based) data order and torch RNG for `miner` in the round."""
    if not 0 <= epoch < 1 << 32:
        raise ValueError(f"epoch must fit 4 bytes, got {epoch}")
    return _seed(_EPOCH_TAG + round_seed + miner + epoch.to_bytes(4, "big"))


def anchored_model(arch: str, hparams: HParams, round_seed: bytes, miner: bytes) -> nn.Module:
    """The anchored start: registry `arch` initialised (on the CPU) from `anchor_seed`; the
    global RNG is left untouched."""
    return build_model(arch, hparams, seed=anchor_seed(round_seed, miner))
