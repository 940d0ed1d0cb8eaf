"""White-box model watermarks keyed by round and miner (paper §IV-C, docs/watermark.md; Uchida et
al. 2017).

Miner (training/sidecars/miner.py)::

    layer = default_layer(model)                       # same rule on every node
    key = derive_key(seed_r, miner_address, layer=layer)
    train(model, data, cfg, extra_loss=lambda m: lam * embed_loss(m, key))

Validator (training/sidecars/verifier.py), from the revealed safetensors alone::

    det = detect_file(path, key)      # or detect(state_dict_or_module, key)
    det.ok                            # every bit's confidence > 0.9999

Keys are public, so the watermark binds a model to a miner only as far as undoing it costs
training time: see watermark/attacks.py and bench/watermark.py for what it costs, including the
zero-epoch least-squares forgery that a white-box attacker can always do.
"""

from watermark.detect import (
    DEFAULT_THRESHOLD,
    Detection,
    detect,
    detect_file,
    detect_vector,
    signed_margins,
    threshold_margin,
)
from watermark.embed import DEFAULT_TEMPERATURE, embed_loss
from watermark.errors import WatermarkError
from watermark.keys import DEFAULT_GAIN, DEFAULT_MATRIX, MATRIX_TYPES, WatermarkKey, derive_key
from watermark.layers import default_layer

__all__ = [
    "DEFAULT_GAIN",
    "DEFAULT_MATRIX",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_THRESHOLD",
    "MATRIX_TYPES",
    "Detection",
    "WatermarkError",
    "WatermarkKey",
    "default_layer",
    "derive_key",
    "detect",
    "detect_file",
    "detect_vector",
    "embed_loss",
    "signed_margins",
    "threshold_margin",
]
