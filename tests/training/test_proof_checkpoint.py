"""Replayable training checkpoints and their manifest: a round trip restores the exact training
state, and every malformed file a stranger could publish is refused with a reason (issue 15)."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from training.models import build_model
from training.proof.checkpoint import (
    BadCheckpoint,
    ReplayConfig,
    load_checkpoint,
    read_manifest,
    save_checkpoint,
    write_manifest,
)
from training.proof.manifest import MAX_ENTRIES
from training.safetensors_header import check_safetensors_header
from training.trainer import Checkpoint

HP = {"depth": 2, "base_width": 4}
CONFIG = ReplayConfig("unet2d", HP, b"\x01" * 32, b"\x02" * 20, 1e-2, 1e-4, 8, "auto", 1.0,
                      100.0, "none", 1e-2, 2000, 999_900)


def _stepped(steps: int) -> tuple[torch.nn.Module, torch.optim.AdamW]:
    """A model and its AdamW after `steps` real steps on a fixed batch."""
    model = build_model("unet2d", HP, seed=3)
    opt = torch.optim.AdamW(model.parameters(), lr=CONFIG.learning_rate,
                            weight_decay=CONFIG.weight_decay)
    x = torch.linspace(-1, 1, 2 * 16 * 16).reshape(2, 1, 16, 16)
    for _ in range(steps):
        opt.zero_grad()
        torch.autograd.backward(model(x).square().mean())
        opt.step()
    return model, opt


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    model, opt = _stepped(3)
    path = tmp_path_factory.mktemp("ck") / "epoch-0001.safetensors"
    save_checkpoint(path, model, opt, epoch=1, step=3, config=CONFIG)
    return path.read_bytes()


def _resave(data: bytes, tensors: Callable[[dict[str, torch.Tensor]], None] | None = None,
            meta: Callable[[dict[str, str]], None] | None = None) -> bytes:
    """`data` re-written with its tensors and/or metadata changed in place by the callables."""
    state = st_load(data)
    metadata = dict(check_safetensors_header(data)["__metadata__"])
    if tensors is not None:
        tensors(state)
    if meta is not None:
        meta(metadata)
    return st_save(state, metadata=metadata)


def test_round_trip_restores_the_training_state(tmp_path: Path) -> None:
    model, opt = _stepped(3)
    path = tmp_path / "epoch-0002.safetensors"
    digest = save_checkpoint(path, model, opt, epoch=2, step=3, config=CONFIG)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    ck = load_checkpoint(path.read_bytes())
    assert (ck.epoch, ck.step, ck.adam_step, ck.config) == (2, 3, 3, CONFIG)
    rebuilt = ck.model()
    rebuilt_opt = ck.optimizer(rebuilt)
    for (name, p), q in zip(model.named_parameters(), rebuilt.parameters(), strict=True):
        assert torch.equal(p.detach(), q.detach()), name
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(opt.state[p][key], rebuilt_opt.state[q][key]), (name, key)
    # The rebuilt state trains on exactly as the original does.
    x = torch.ones(1, 1, 16, 16)
    for m, o in ((model, opt), (rebuilt, rebuilt_opt)):
        o.zero_grad()
        torch.autograd.backward(m(x).square().mean())
        o.step()
    assert all(torch.equal(a, b) for a, b in
               zip(model.state_dict().values(), rebuilt.state_dict().values(), strict=True))


def test_untrained_checkpoint_has_zero_adam_state(tmp_path: Path) -> None:
    model, opt = _stepped(0)
    save_checkpoint(tmp_path / "c", model, opt, epoch=0, step=0, config=CONFIG)
    ck = load_checkpoint((tmp_path / "c").read_bytes())
    assert ck.adam_step == 0 and all(not t.any() for t in ck.exp_avg.values())
    assert ck.optimizer(ck.model()).state_dict()["state"] == {}


def test_config_json_round_trip() -> None:
    assert ReplayConfig.from_json(json.loads(json.dumps(CONFIG.to_json()))) == CONFIG


def test_invalid_save_with_another_learning_rate(tmp_path: Path) -> None:
    model, opt = _stepped(1)
    with pytest.raises(ValueError, match="learning rate"):
        save_checkpoint(tmp_path / "c", model, opt, epoch=1, step=1,
                        config=replace(CONFIG, learning_rate=0.5))


def test_invalid_pickle(good: bytes) -> None:
    buf = io.BytesIO()
    torch.save(st_load(good), buf)
    with pytest.raises(BadCheckpoint, match="zip archive|pickle"):
        load_checkpoint(buf.getvalue())


@pytest.mark.parametrize("data", [b"", b"garbage" * 10, b"\x80\x04K\x01." + b"\0" * 16])
def test_invalid_garbage(data: bytes) -> None:
    with pytest.raises(BadCheckpoint):
        load_checkpoint(data)


def test_invalid_missing_tensor(good: bytes) -> None:
    def drop(t: dict[str, torch.Tensor]) -> None:
        del t[next(k for k in sorted(t) if k.endswith(".exp_avg_sq"))]
    with pytest.raises(BadCheckpoint, match="missing"):
        load_checkpoint(_resave(good, drop))


def test_invalid_extra_tensor(good: bytes) -> None:
    def add(t: dict[str, torch.Tensor]) -> None:
        t["model.extra"] = torch.zeros(3)
    with pytest.raises(BadCheckpoint, match="unexpected"):
        load_checkpoint(_resave(good, add))


def test_invalid_wrong_shape(good: bytes) -> None:
    def reshape(t: dict[str, torch.Tensor]) -> None:
        name = next(k for k in sorted(t) if k.startswith("model.") and t[k].dim() == 4)
        t[name] = t[name][:1].contiguous()
    with pytest.raises(BadCheckpoint, match="shape"):
        load_checkpoint(_resave(good, reshape))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_invalid_not_float32(good: bytes, dtype: torch.dtype) -> None:
    def cast(t: dict[str, torch.Tensor]) -> None:
        name = next(k for k in sorted(t) if k.endswith(".exp_avg"))
        t[name] = t[name].to(dtype)
    with pytest.raises(BadCheckpoint, match="dtype"):
        load_checkpoint(_resave(good, cast))


def test_invalid_nan(good: bytes) -> None:
    def poison(t: dict[str, torch.Tensor]) -> None:
        name = next(k for k in sorted(t) if k.startswith("model."))
        t[name] = t[name].clone().flatten().index_fill(0, torch.tensor([0]), float("nan")) \
            .reshape(t[name].shape)
    with pytest.raises(BadCheckpoint, match="NaN"):
        load_checkpoint(_resave(good, poison))


def test_invalid_negative_second_moment(good: bytes) -> None:
    def negate(t: dict[str, torch.Tensor]) -> None:
        name = next(k for k in sorted(t) if k.endswith(".exp_avg_sq"))
        t[name] = -t[name] - 1.0
    with pytest.raises(BadCheckpoint, match="negative"):
        load_checkpoint(_resave(good, negate))


@pytest.mark.parametrize("mutate", [
    lambda m: m.update({"dlbc.pol": "{not json"}),
    lambda m: m.pop("dlbc.pol"),
    lambda m: m.update({"dlbc.pol": json.dumps({**json.loads(m["dlbc.pol"]), "seal_lr": -1})}),
    lambda m: m.update({"dlbc.pol": json.dumps({**json.loads(m["dlbc.pol"]), "extra": 1})}),
    lambda m: m.update({"dlbc.pol": json.dumps({**json.loads(m["dlbc.pol"]), "batch_size": True})}),
    lambda m: m.update({"dlbc.pol": json.dumps({**json.loads(m["dlbc.pol"]), "miner": "zz"})}),
    lambda m: m.update({"dlbc.pol": json.dumps({**json.loads(m["dlbc.pol"]), "arch": "gpt"})}),
    lambda m: m.update({"dlbc.epoch": "-1"}),
    lambda m: m.update({"dlbc.step": "01"}),
    lambda m: m.update({"dlbc.arch": "cnn"}),
])
def test_invalid_config_does_not_parse(good: bytes, mutate: Callable[[dict[str, str]], None],
                                       ) -> None:
    with pytest.raises(BadCheckpoint):
        load_checkpoint(_resave(good, meta=mutate))


def test_invalid_config_for_another_architecture_size(good: bytes) -> None:
    # A config naming a wider model: the file's tensors no longer fit what it claims.
    def widen(m: dict[str, str]) -> None:
        pol = json.loads(m["dlbc.pol"])
        pol["hparams"] = {**pol["hparams"], "base_width": 8}
        m["dlbc.pol"] = json.dumps(pol)
        m["dlbc.hparams"] = json.dumps(pol["hparams"], sort_keys=True)
    with pytest.raises(BadCheckpoint, match="shape"):
        load_checkpoint(_resave(good, meta=widen))


# --------------------------------------------------------------------------------------------
# Manifest


def _checkpoints(n: int) -> list[Checkpoint]:
    return [Checkpoint(e, Path(f"/x/epoch-{e:04d}.safetensors"), f"{e:064x}") for e in range(n)]


def test_manifest_round_trip(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, _checkpoints(4), CONFIG)
    assert path == tmp_path / "manifest.json"
    manifest = read_manifest(path.read_bytes())
    assert manifest.config == CONFIG
    assert [(e.epoch, e.file, e.sha256) for e in manifest.checkpoints] == \
        [(c.epoch, c.path.name, c.sha256) for c in _checkpoints(4)]


def _manifest(entries: list[dict[str, object]]) -> bytes:
    return json.dumps({"version": 1, "pol": CONFIG.to_json(), "checkpoints": entries}).encode()


def _entries(n: int) -> list[dict[str, object]]:
    return [{"epoch": c.epoch, "file": c.path.name, "sha256": c.sha256} for c in _checkpoints(n)]


@pytest.mark.parametrize("file", ["../epoch-0001.safetensors", "/etc/epoch-0001.safetensors",
                                  "a/epoch-0001.safetensors", "epoch-0001.safetensors/..",
                                  "epoch-1.safetensors", "epoch-0002.safetensors"])
def test_invalid_manifest_path_in_file_name(file: str) -> None:
    entries = _entries(3)
    entries[1]["file"] = file
    with pytest.raises(ValueError, match="file must be"):
        read_manifest(_manifest(entries))


def test_invalid_manifest_too_many_entries() -> None:
    read_manifest(_manifest(_entries(MAX_ENTRIES)))  # the bound itself is fine
    with pytest.raises(ValueError, match="entries"):
        read_manifest(_manifest(_entries(MAX_ENTRIES + 1)))


def test_invalid_manifest_epochs_out_of_order() -> None:
    entries = _entries(3)
    entries[1], entries[2] = entries[2], entries[1]
    with pytest.raises(ValueError, match="in order"):
        read_manifest(_manifest(entries))


@pytest.mark.parametrize("data", [
    b"[]", b"{", json.dumps({"version": 2, "pol": CONFIG.to_json(), "checkpoints": []}).encode(),
    b'{"version": 1, "version": 1, "pol": {}, "checkpoints": []}',
    _manifest(_entries(1)),
    _manifest([{**e, "sha256": "AB" * 32} for e in _entries(2)]),
    _manifest([{**e, "size": 1} for e in _entries(2)]),
])
def test_invalid_manifest_malformed(data: bytes) -> None:
    with pytest.raises(ValueError):
        read_manifest(data)


def test_invalid_write_manifest_with_foreign_file_names(tmp_path: Path) -> None:
    bad = [replace(c, path=Path(f"/x/ckpt-{c.epoch}.safetensors")) for c in _checkpoints(2)]
    with pytest.raises(ValueError, match="file must be"):
        write_manifest(tmp_path, bad, CONFIG)
    assert not (tmp_path / "manifest.json").exists()
