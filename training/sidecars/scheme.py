"""The chain's watermark scheme as the sidecars use it (params `watermark_*`, docs/watermark.md).

Its own module because every role needs it (the publisher to size a task, the miner to embed,
the verifier to detect) and none of them should need the poll loop to get it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch only where a role actually trains or detects
    from torch import nn

    from watermark import WatermarkKey


class WatermarkParamsError(ValueError):
    """The chain's `params` answer lacks or misstates the watermark scheme (docs/watermark.md)."""


#: The chain params (abci_app/dlbc/params.py) that decide whether a watermark is detected.
WATERMARK_PARAMS: tuple[str, ...] = (
    "watermark_bits", "watermark_matrix", "watermark_gain", "watermark_threshold_ppm",
)


@dataclass(frozen=True, slots=True)
class WatermarkScheme:
    """The chain's watermark rules (params `watermark_*`, docs/watermark.md), as sidecars use them.

    Why from the chain and never from `watermark`'s package defaults: a miner embeds and every
    validator detects, and a model is only accepted if both used the same bit count, projection
    family, row gain, layer rule and threshold. Reading them from the `params` query makes a
    chain (genesis) change reach every sidecar at once and makes a sidecar that disagrees fail
    loudly instead of silently rejecting honest models. The embedding temperature and λ are not
    here: they change how a miner trains, not what a validator accepts.
    """

    n_bits: int
    matrix: str
    gain: int
    threshold_ppm: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> WatermarkScheme:
        """Validate with the chain's own rules (abci_app.dlbc.params); nothing falls back."""
        from abci_app.dlbc.params import Params

        missing = [k for k in WATERMARK_PARAMS if k not in params]
        if missing:
            raise WatermarkParamsError(
                f"the chain's params lack {', '.join(missing)}: the node runs an app that does "
                "not state the watermark scheme; upgrade it (no local default is assumed)")
        try:
            p = Params.from_json({k: params[k] for k in WATERMARK_PARAMS})
        except ValueError as exc:
            raise WatermarkParamsError(f"the chain's watermark params are invalid: {exc}") from None
        return cls(p.watermark_bits, p.watermark_matrix, p.watermark_gain,
                   p.watermark_threshold_ppm)

    @classmethod
    def genesis_default(cls) -> WatermarkScheme:
        """The scheme of a chain whose genesis sets no watermark params (params.Params defaults).

        Only for offline checks with no chain to ask (preparing a task); a running sidecar uses
        `ChainClient.watermark_scheme`.
        """
        from abci_app.dlbc.params import Params

        return cls.from_params(Params().to_json())

    @property
    def threshold(self) -> float:
        """Per-bit confidence to exceed (off-chain float; the chain keeps ppm)."""
        return self.threshold_ppm / 1_000_000

    def layer(self, model: nn.Module | Mapping[str, Any]) -> str:
        """The watermark-carrying layer of `model` under this scheme (same rule on every node)."""
        from watermark import default_layer

        return default_layer(model, n_bits=self.n_bits, matrix=self.matrix)

    def key(self, seed: bytes, miner: bytes, layer: str) -> WatermarkKey:
        """The key of `miner` for the round seeded by `seed`; WatermarkError on bad input."""
        from watermark import derive_key

        return derive_key(seed, miner, layer=layer, n_bits=self.n_bits, matrix=self.matrix,
                          gain=float(self.gain))
