"""Attack harness: the paper's removal, overwrite, and the zero-epoch least-squares forgery."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import watermark as wm
from tests.watermark.helpers import OTHER_MINER, SEED
from watermark.attacks import ExtraLoss, StepCallback, forge, run_attack


def _steps(model: nn.Module, extra: ExtraLoss, n: int, after_step: StepCallback) -> None:
    """The attacker's training: Adam on the extra loss alone (no task needed to move the bits)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for i in range(n):
        loss = extra(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        after_step(i)


def _attacker(key: wm.WatermarkKey) -> wm.WatermarkKey:
    return wm.derive_key(
        SEED, OTHER_MINER, layer=key.layer, n_bits=key.n_bits, matrix=key.matrix, gain=key.gain
    )


def test_forge_swaps_the_owner_without_training(marked: nn.Module, key: wm.WatermarkKey) -> None:
    stolen = copy.deepcopy(marked)
    attacker = _attacker(key)
    norm = forge(stolen, key, attacker)
    assert norm > 0
    assert not wm.detect(stolen, key).ok
    assert wm.detect(stolen, attacker).ok
    # Only the watermark layer changed.
    for (name, a), b in zip(marked.state_dict().items(), stolen.state_dict().values(), strict=True):
        assert torch.equal(a, b) is (name != key.layer), name


def test_forge_removal_only(marked: nn.Module, key: wm.WatermarkKey) -> None:
    stolen = copy.deepcopy(marked)
    forge(stolen, key)
    det = wm.detect(stolen, key)
    assert not det.ok and det.min_confidence < 0.6


@pytest.mark.parametrize("mode", ["removal", "overwrite"])
def test_run_attack_records_when_the_owner_changes(
    marked: nn.Module, key: wm.WatermarkKey, mode: str
) -> None:
    attacker = _attacker(key)
    trace = run_attack(
        copy.deepcopy(marked),
        key,
        attacker,
        _steps,
        mode=mode,  # type: ignore[arg-type]
        lam=1.0,
        max_steps=400,
        steps_per_epoch=10,
        temperature=10.0,
    )
    assert trace.victim_min_conf[0] > 0.9999  # the stolen model starts out as the victim's
    assert trace.attacker_min_conf[0] < 0.9999
    assert trace.step_success is not None
    assert len(trace.victim_min_conf) == trace.step_success + 1  # stopped at success
    removed, detected = trace.step_victim_removed, trace.step_attacker_detected
    assert removed is not None and detected is not None
    assert max(removed, detected) <= trace.step_success
    assert all(c > 0.9999 for c in trace.victim_min_conf[:removed])
    assert trace.victim_min_conf[removed] <= 0.9999
    assert trace.attacker_min_conf[detected] > 0.9999
    assert trace.epochs(trace.step_success) == trace.step_success / 10


def test_run_attack_no_steps_reports_nothing(marked: nn.Module, key: wm.WatermarkKey) -> None:
    trace = run_attack(
        copy.deepcopy(marked),
        key,
        _attacker(key),
        _steps,
        mode="overwrite",
        lam=1.0,
        max_steps=0,
        steps_per_epoch=10,
    )
    assert trace.step_success is None and trace.step_victim_removed is None
    assert trace.epochs(None) is None


def test_invalid_run_attack(marked: nn.Module, key: wm.WatermarkKey) -> None:
    with pytest.raises(wm.WatermarkError, match="mode"):
        run_attack(
            marked,
            key,
            _attacker(key),
            _steps,
            mode="steal",  # type: ignore[arg-type]
            lam=1.0,
            max_steps=1,
            steps_per_epoch=1,
        )
    other_layer = wm.derive_key(SEED, OTHER_MINER, layer="body.1.weight", n_bits=16)
    with pytest.raises(wm.WatermarkError, match="same layer"):
        run_attack(
            marked,
            key,
            other_layer,
            _steps,
            mode="overwrite",
            lam=1.0,
            max_steps=1,
            steps_per_epoch=1,
        )
