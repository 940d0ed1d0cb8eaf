"""The one exception type of the watermark package.

Bad keys, missing layers and wrong shapes are the caller's (or the submitting miner's) fault: the
verifier turns a ``WatermarkError`` into a "watermark not ok" verdict instead of crashing
(COMMON: bad input gets a clear error and changes nothing).
"""

from __future__ import annotations


class WatermarkError(ValueError):
    """A watermark key, layer or tensor that cannot be used; the message says which and why."""
