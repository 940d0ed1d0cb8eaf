"""The watermark scheme is a chain rule: sidecars read it from `params`, not package defaults.

`WatermarkScheme` (training/sidecars/base.py) is what the miner and the verifier build keys with; these
tests show that a changed chain param changes what the verifier accepts, that a node which does
not state the scheme is refused loudly, and that the chain's documented defaults are today's
watermark package behaviour.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import torch

import watermark
from abci_app.dlbc import params as chain_params
from abci_app.dlbc.params import Params
from training.artifacts import save_model
from training.data import make_segmentation_2d
from training.models import build_model
from training.sidecars.artifact_server import ArtifactServer
from training.sidecars.base import WATERMARK_PARAMS, WatermarkParamsError, WatermarkScheme
from training.sidecars.miner import MinerConfig
from training.sidecars.offline_records import reveal, task_spec
from training.sidecars.sealing import seal_watermark
from training.sidecars.verifier import check_model
from watermark.keys import MAX_N_BITS

HP = {"depth": 2, "base_width": 8}
SPEC = task_spec("unet2d", '{"base_width": 8, "depth": 2}', "dice")
SEED = hashlib.sha256(b"a round").digest()
MINER = bytes(range(20))


def _scheme(**changes: Any) -> WatermarkScheme:
    return WatermarkScheme.from_params({**Params().to_json(), **changes})


def test_chain_defaults_are_the_watermark_package_defaults() -> None:
    p = Params()
    assert p.watermark_bits == watermark.keys.DEFAULT_N_BITS == 256
    assert p.watermark_matrix == watermark.DEFAULT_MATRIX == "diff"
    assert p.watermark_gain == watermark.DEFAULT_GAIN == 1000
    assert p.watermark_threshold_ppm / 1e6 == watermark.DEFAULT_THRESHOLD
    assert chain_params.WATERMARK_MATRICES == watermark.MATRIX_TYPES
    assert chain_params.WATERMARK_MAX_BITS == MAX_N_BITS
    assert MinerConfig().watermark_temperature == watermark.DEFAULT_TEMPERATURE


def test_scheme_from_params_builds_keys_with_every_chain_value() -> None:
    s = _scheme(watermark_bits=64, watermark_matrix="diff", watermark_gain=2500,
                watermark_threshold_ppm=990_000)
    assert (s.n_bits, s.matrix, s.gain, s.threshold) == (64, "diff", 2500, 0.99)
    model = build_model("unet2d", HP, seed=0)
    key = s.key(SEED, MINER, s.layer(model))
    assert (key.n_bits, key.matrix, key.gain) == (64, "diff", 2500.0)
    assert WatermarkScheme.genesis_default() == _scheme()


def test_invalid_scheme_missing_param_is_refused_not_defaulted() -> None:
    """A node that does not state the scheme (older app) must not be second-guessed."""
    for name in WATERMARK_PARAMS:
        answer = Params().to_json()
        del answer[name]
        with pytest.raises(WatermarkParamsError, match=name):
            WatermarkScheme.from_params(answer)


@pytest.mark.parametrize("changes,needle", [
    ({"watermark_matrix": "dense"}, "watermark_matrix must be one of"),
    ({"watermark_bits": 0}, "watermark_bits"),
    ({"watermark_gain": "x"}, "watermark_gain"),
    ({"watermark_threshold_ppm": 1_000_000}, "watermark_threshold_ppm"),
])
def test_invalid_scheme_values_are_refused(changes: dict[str, Any], needle: str) -> None:
    with pytest.raises(WatermarkParamsError, match=needle):
        _scheme(**changes)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One model sealed under a 128-bit "direct" chain, one under a 128-bit "diff" chain."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("wm-params")
    digests = {}
    for name, scheme in (("direct128", _scheme(watermark_bits=128, watermark_matrix="direct")),
                         ("diff128", _scheme(watermark_bits=128, watermark_matrix="diff"))):
        model = build_model("unet2d", HP, seed=0)
        det, _ = seal_watermark(model, scheme.key(SEED, MINER, scheme.layer(model)),
                                scheme.threshold)
        assert det.ok
        digests[name] = save_model(model, root / f"{name}.safetensors")
    with ArtifactServer(root) as srv:
        yield {"srv": srv, "digests": digests, "test": make_segmentation_2d(4, 16, seed=3)}


def _verify(served: Any, name: str, scheme: WatermarkScheme) -> Any:
    rev = reveal(MINER, served["srv"].url_for(f"{name}.safetensors"), served["digests"][name], 1)
    return check_model(rev, SPEC, SEED, served["test"], scheme=scheme, max_bytes=1 << 24,
                       timeout=10.0, allow_private=True)


def test_verifier_honours_chain_bit_count(served: Any) -> None:
    """Embedded with 128 bits: accepted where the chain says 128, rejected where it says 256."""
    ok = _verify(served, "direct128", _scheme(watermark_bits=128, watermark_matrix="direct"))
    assert ok.verdict and ok.watermark_ok and ok.reason == ""
    bad = _verify(served, "direct128", _scheme(watermark_matrix="direct"))  # default 256 bits
    assert bad.verdict and not bad.watermark_ok and "watermark not detected" in bad.reason


def test_verifier_honours_chain_matrix_gain_and_threshold(served: Any) -> None:
    assert _verify(served, "diff128", _scheme(watermark_bits=128, watermark_matrix="diff")
                   ).watermark_ok
    assert not _verify(served, "diff128", _scheme(watermark_bits=128, watermark_matrix="direct")
                       ).watermark_ok
    # gain 10 shrinks every margin 100x: the bits still read right (a 0.5 threshold passes) but
    # no longer clear 0.9999, so both the gain and the threshold reach detection
    weak = _scheme(watermark_bits=128, watermark_matrix="direct", watermark_gain=10)
    assert not _verify(served, "direct128", weak).watermark_ok
    lax = _verify(served, "direct128", _scheme(watermark_bits=128, watermark_matrix="direct",
                                               watermark_gain=10, watermark_threshold_ppm=500_000))
    assert lax.watermark_ok and 0.5 < lax.watermark_min_confidence < 0.9999
