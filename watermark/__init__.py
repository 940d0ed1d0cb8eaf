"""White-box model watermarks keyed by round and miner (paper §IV-C, DESIGN §7; Uchida et al. 2017).

A miner embeds the bits of ``derive_key(seed_r, address)`` into one conv layer by adding
``λ·embed_loss(model, key)`` to its training loss; a validator checks them with ``detect`` (or
``detect_file`` on the revealed safetensors) and accepts only if every bit's confidence exceeds
0.9999.
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
from watermark.embed import embed_loss
from watermark.errors import WatermarkError
from watermark.keys import DEFAULT_GAIN, DEFAULT_MATRIX, MATRIX_TYPES, WatermarkKey, derive_key
from watermark.layers import default_layer

__all__ = [
    "DEFAULT_GAIN",
    "DEFAULT_MATRIX",
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
