"""The verifier's copy/overwrite defence with real training (training/sidecars/copy_marks.py,
docs/verification.md).

Keys are public, so a thief B can take miner A's model, embed its own key on top and reveal it.
A few steps make B's mark pass, but A's mark is still in the weights; the verifier tests every
other committed/revealed miner's key (and the previous round's winner's here; every earlier
round's winners and reveals in test_copy_index*.py) and rejects B's reveal with "carries <A>'s
watermark", while A's own model and an independently trained C pass.

The model is a 2-level U-Net 32 filters wide: its watermark layer has m = 1152 coordinates, enough
that B's 256 bits collide with few of A's (see copy_marks' docstring for why the tiniest U-Net,
m = 288, cannot tell a copy from chance).
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from abci_app.dlbc.records import RoundInfo
from training.artifacts import save_model
from training.data import ArrayDataset, make_segmentation_2d
from training.models import build_model
from training.sidecars.artifact_server import ArtifactServer
from training.sidecars.base import WatermarkScheme
from training.sidecars.copy_marks import (
    OtherMark,
    copy_bits_needed,
    foreign_mark,
    marks_to_exclude,
)
from training.sidecars.offline_records import reveal, round_info, task_spec
from training.sidecars.sealing import seal_watermark
from training.sidecars.verifier import ModelCheck, check_model
from training.trainer import TrainConfig, train
from watermark import WatermarkKey, detect, embed_loss
from watermark.layers import layer_from

HP = {"depth": 2, "base_width": 32}
SPEC = task_spec("unet2d", '{"base_width": 32, "depth": 2}', "dice")
# The chain's default scheme except for the matrix: with "diff" a bit reads two coordinates, so a
# thief's 256 bits break about 2·T²/m of the victim's (81 of 256 at m = 1152 here), and the
# statistical test (200 of 256 must still read) needs m >~ 2·T²/(T - k) ≈ 2340, a model 4x this
# size. "direct" breaks ~T²/2m (~28 here), so it shows the defence on a model that trains fast.
SCHEME = replace(WatermarkScheme.genesis_default(), matrix="direct")
SEED_PREV = hashlib.sha256(b"round 1 seed").digest()
SEED = hashlib.sha256(b"round 2 seed").digest()
A, B, C = bytes([0xA] * 20), bytes([0xB] * 20), bytes([0xC] * 20)


def _train(model: nn.Module, data: ArrayDataset, key: WatermarkKey, epochs: int) -> nn.Module:
    """A miner's work: task loss + λ·E_R for a few epochs, then seal as training/sidecars/miner.py does."""
    cfg = TrainConfig(budget_seconds=120, max_epochs=epochs, batch_size=8, learning_rate=3e-3,
                      device="cpu", progress=False)
    train(model, data, cfg, extra_loss=lambda m: embed_loss(m, key))
    det, _ = seal_watermark(model, key, SCHEME.threshold)
    assert det.ok
    return model


def _bits_read(model: nn.Module, key: WatermarkKey) -> int:
    det = detect(model, key, SCHEME.threshold)
    return int(np.count_nonzero(det.confidences > SCHEME.threshold))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    torch.set_num_threads(1)
    data = make_segmentation_2d(32, 16, seed=5)
    test = make_segmentation_2d(8, 16, seed=6)
    layer = SCHEME.layer(build_model("unet2d", HP, seed=0))
    keys = {(who, seed): SCHEME.key(seed, who, layer)
            for who in (A, B, C) for seed in (SEED, SEED_PREV)}
    # A trained honestly in round 2 and (the same weights, re-marked) won round 1.
    a = _train(build_model("unet2d", HP, seed=0), data, keys[A, SEED], epochs=2)
    a_prev = copy.deepcopy(a)
    seal_watermark(a_prev, keys[A, SEED_PREV], SCHEME.threshold)
    # B steals A's round-2 model and fine-tunes it with its own key: task loss + E_R, then seal.
    b = _train(copy.deepcopy(a), data, keys[B, SEED], epochs=1)
    # B' steals round 1's winning model and only seals its own round-2 key onto it.
    b_prev = copy.deepcopy(a_prev)
    assert seal_watermark(b_prev, keys[B, SEED], SCHEME.threshold)[0].ok
    # C trains its own model from scratch.
    c = _train(build_model("unet2d", HP, seed=1), data, keys[C, SEED], epochs=1)
    root = tmp_path_factory.mktemp("copies")
    digests = {name: save_model(m, root / f"{name}.safetensors")
               for name, m in {"a": a, "b": b, "b_prev": b_prev, "c": c}.items()}
    with ArtifactServer(root) as srv:
        yield {"srv": srv, "test": test, "digests": digests, "keys": keys,
               "models": {"a": a, "b": b, "b_prev": b_prev, "c": c}}


def _round(n: int, seed: bytes, miners: list[bytes]) -> RoundInfo:
    return round_info(n, seed, miners, miners)


def _check(world: Any, name: str, miner: bytes, others: list[OtherMark]) -> ModelCheck:
    rev = reveal(miner, world["srv"].url_for(f"{name}.safetensors"), world["digests"][name],
                 500_000)
    return check_model(rev, SPEC, SEED, world["test"], scheme=SCHEME, max_bytes=1 << 24,
                       timeout=10.0, others=others, allow_private=True)


def test_overwritten_copy_still_carries_the_victims_watermark(world: Any) -> None:
    """The premise: a few steps make B's mark pass while most of A's bits still read."""
    keys, b = world["keys"], world["models"]["b"]
    assert detect(b, keys[B, SEED], SCHEME.threshold).ok
    assert _bits_read(b, keys[A, SEED]) >= copy_bits_needed(SCHEME.n_bits)
    for name in ("a", "c"):  # honest models read about half of a foreign key, far below the line
        assert _bits_read(world["models"][name], keys[B, SEED]) < copy_bits_needed(SCHEME.n_bits)


def test_invalid_copy_of_same_round_miner_is_rejected(world: Any) -> None:
    others = marks_to_exclude(_round(2, SEED, [A, B, C]), None)
    chk = _check(world, "b", B, others)
    assert chk.verdict and not chk.watermark_ok
    assert f"carries {A.hex()}'s watermark" in chk.reason
    # B's own mark passed: only the copy check fails it
    assert chk.watermark_min_confidence > SCHEME.threshold
    assert chk.score_ppm > 0  # still measured, for the record


def test_victim_and_independent_miner_pass_the_copy_check(world: Any) -> None:
    others = marks_to_exclude(_round(2, SEED, [A, B, C]), None)
    for name, miner in (("a", A), ("c", C)):
        chk = _check(world, name, miner, others)
        assert chk.verdict and chk.watermark_ok and chk.reason == "", (name, chk.reason)


def test_copy_passes_without_the_defence(world: Any) -> None:
    """What the defence adds: with no other keys to test, B's copy would be accepted."""
    chk = _check(world, "b", B, [])
    assert chk.verdict and chk.watermark_ok


def test_invalid_copy_of_previous_round_winner_is_rejected(world: Any) -> None:
    previous = round_info(1, SEED_PREV, [A], [A], won_by=A)
    others = marks_to_exclude(_round(2, SEED, [B, C]), previous)
    assert OtherMark(A.hex(), SEED_PREV, "won round 1") in others
    chk = _check(world, "b_prev", B, others)
    assert not chk.watermark_ok and f"carries {A.hex()}'s watermark" in chk.reason
    assert "won round 1" in chk.reason
    # the winner itself may build on its own earlier model
    assert _check(world, "a", A, others).watermark_ok


def test_foreign_mark_is_one_product_per_key_on_one_kernel(world: Any) -> None:
    """foreign_mark works on the extracted mean kernel; the revealer's own key is skipped."""
    keys = world["keys"]
    w = layer_from(world["models"]["b"], keys[A, SEED].layer)
    own = [OtherMark(B.hex(), SEED, "self")]
    assert foreign_mark(w, keys[A, SEED].layer, B.hex(), own, SCHEME) is None
    hit = foreign_mark(w, keys[A, SEED].layer, B.hex(),
                       [OtherMark("zz", SEED, "bad address"), OtherMark(A.hex(), SEED, "x")],
                       SCHEME)
    assert hit is not None and hit.miner == A.hex() and "of its bits" in hit.why


def test_marks_to_exclude_is_sorted_and_deduplicated() -> None:
    rec = round_info(3, SEED, committed=[C, A], revealed=[A])
    marks = marks_to_exclude(rec, round_info(2, SEED_PREV, [], []))
    assert [m.miner for m in marks] == [A.hex(), C.hex()]
    assert all(m.seed == SEED for m in marks)


@pytest.mark.parametrize("n_bits,need", [(1, None), (63, None), (64, 64), (128, 113),
                                         (256, 200)])
def test_copy_bits_needed_binomial_line(n_bits: int, need: int | None) -> None:
    """k is the smallest count whose chance tail P(Bin(T, 1/2) >= k) is <= 2^-64."""
    assert copy_bits_needed(n_bits) == need
    if need is not None:
        from math import comb
        tail = sum(comb(n_bits, k) for k in range(need, n_bits + 1))
        assert tail * 2**64 <= 2**n_bits
        assert (tail + comb(n_bits, need - 1)) * 2**64 > 2**n_bits


def test_copy_check_off_below_64_bits(world: Any) -> None:
    """With so few bits no count is unlikely enough; the check stays off rather than guess."""
    small = WatermarkScheme(32, "direct", 1000, SCHEME.threshold_ppm)
    w = layer_from(world["models"]["a"], world["keys"][A, SEED].layer)
    assert foreign_mark(w, world["keys"][A, SEED].layer, B.hex(),
                        [OtherMark(A.hex(), SEED, "x")], small) is None
    # ... and a 0-bit defence is no defence: with a full 256-bit scheme A's own key is found
    assert foreign_mark(w, world["keys"][A, SEED].layer, B.hex(),
                        [OtherMark(A.hex(), SEED, "x")], SCHEME) is not None
