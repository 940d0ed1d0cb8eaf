"""A task that cannot work is refused before anything is written or sent, and every architecture
has defaults that carry the chain's watermark (issue 13). Real models, real files, real CLI."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from abci_app.dlbc.process import METRICS
from abci_app.keyfile import save_key
from dlbc_ops.cli.main import main as dlbc
from tests.support import REPO
from training.data import ArrayDataset, make_segmentation_2d, make_segmentation_3d
from training.models import ARCHITECTURES, get_architecture
from training.sidecars.base import WatermarkScheme
from training.sidecars.task_fit import TaskMismatch, fit_task
from training.sidecars.task_prep import prepare_task

from .helpers import free_port, key

GENESIS = WatermarkScheme.genesis_default()


def _labels(n: int = 24, size: int = 16, classes: int = 3) -> ArrayDataset:
    rng = np.random.default_rng(0)
    return ArrayDataset(rng.random((n, 1, size, size), dtype=np.float32),
                        rng.integers(0, classes, n).astype(np.int64), "classification", classes)


def _data_for(arch: str) -> ArrayDataset:
    if get_architecture(arch).kind == "classification":
        return _labels()
    if get_architecture(arch).spatial_dims == 3:
        return make_segmentation_3d(8, 16, seed=1)
    return make_segmentation_2d(8, 16, seed=1)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_default_carries_the_genesis_watermark(arch: str) -> None:
    data = _data_for(arch)
    metric = "accuracy" if data.kind == "classification" else "dice"
    fitted = fit_task(arch, {}, metric, kind=data.kind, num_classes=data.num_classes,
                      sample_shape=data.sample_shape, scheme=GENESIS)
    # Verify a miner can embed the chain's mark in the model the spec will name
    assert GENESIS.layer(fitted.model)
    # Verify the output size follows the data (3 labels for cnn, binary masks: 1 channel)
    out_key = get_architecture(arch).output_key
    assert fitted.hparams[out_key] == (3 if data.kind == "classification" else 1)


def test_cnn_default_is_widened_until_it_carries_the_mark() -> None:
    data = _labels()
    fitted = fit_task("cnn", {}, "accuracy", kind=data.kind, num_classes=3,
                      sample_shape=data.sample_shape, scheme=GENESIS)
    assert fitted.grown_from == 16 and fitted.hparams["base_width"] == 64


def test_prepare_task_writes_complete_hparams_into_the_spec(tmp_path: Path) -> None:
    import json

    task = prepare_task(_labels(), directory=tmp_path / "artifacts" / "c", base_url="http://h:1",
                        architecture="cnn", hparams={}, metric="accuracy", test_fraction=0.25,
                        seed=1, name="c")
    assert json.loads(task.spec.hyperparams_json) == {
        "in_channels": 1, "num_classes": 3, "depth": 2, "base_width": 64}


def test_invalid_explicit_base_width_too_small_is_not_widened() -> None:
    data = _labels()
    with pytest.raises(TaskMismatch, match="too small to carry"):
        fit_task("cnn", {"base_width": 16}, "accuracy", kind=data.kind, num_classes=3,
                 sample_shape=data.sample_shape, scheme=GENESIS)


@pytest.mark.parametrize(("arch", "metric", "kind", "needle"), [
    ("cnn", "dice", "classification", "use --metric accuracy"),
    ("unet2d", "accuracy", "segmentation", "use --metric dice"),
    ("unet2d", "dice", "classification", "use --arch cnn"),
    ("cnn", "accuracy", "segmentation", "use --arch unet2d"),
    ("unet2d", "dice_per_image", "segmentation", "not one the chain accepts"),
])
def test_invalid_fit_task_mismatches(arch: str, metric: str, kind: str, needle: str) -> None:
    data = _labels() if kind == "classification" else make_segmentation_2d(8, 16, seed=1)
    with pytest.raises(TaskMismatch, match=re.escape(needle)):
        fit_task(arch, {}, metric, kind=data.kind, num_classes=data.num_classes,
                 sample_shape=data.sample_shape, scheme=GENESIS)


def test_invalid_output_size_other_than_the_data_classes() -> None:
    data = _labels(classes=3)
    with pytest.raises(TaskMismatch, match="cannot predict the data's 3 classes"):
        fit_task("cnn", {"num_classes": 10}, "accuracy", kind=data.kind, num_classes=3,
                 sample_shape=data.sample_shape, scheme=GENESIS)


@pytest.mark.parametrize(("args", "needle"), [
    (["--demo", "--arch", "cnn"], "use --arch unet2d"),
    (["--data", "LABELS", "--arch", "cnn", "--metric", "dice"], "use --metric accuracy"),
    (["--demo", "--metric", "accuracy"], "use --metric dice"),
    (["--data", "LABELS", "--arch", "unet2d"], "use --arch cnn"),
    (["--data", "LABELS", "--metric", "dice"], "use --metric accuracy"),
])
def test_invalid_task_submit_mismatch_caught_before_the_node(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str) -> None:
    """Refused from the command line and the file alone: exit 2 at once, although nothing
    listens at --rpc (so nothing could have been sent) and nothing is prepared."""
    _labels().save_npz(tmp_path / "labels.npz")
    save_key(tmp_path / "k.json", key(60))
    args = [str(tmp_path / "labels.npz") if a == "LABELS" else a for a in args]
    start = time.monotonic()
    code = dlbc(["task", "submit", "--key", str(tmp_path / "k.json"), *args, "--workdir",
                 str(tmp_path / "w"), "--rpc", f"http://127.0.0.1:{free_port()}",
                 "--log-level", "error"])
    assert code == 2 and needle in capsys.readouterr().err
    assert time.monotonic() - start < 10
    assert not (tmp_path / "w").exists()


def test_invalid_task_submit_metric_the_chain_refuses(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        dlbc(["task", "submit", "--key", "k", "--demo", "--metric", "dice_per_image"])
    assert exc.value.code == 2 and "invalid choice: 'dice_per_image'" in capsys.readouterr().err


def test_readme_lists_exactly_the_metrics_the_chain_accepts() -> None:
    text = (REPO / "README.md").read_text()
    line = next(ln for ln in text.splitlines() if "Metrics go on chain" in ln
                or "metrics the chain accepts" in ln.lower())
    para = text[text.index(line):].split("\n\n")[0]
    listed = set(re.findall(r"`(dice\w*|accuracy)`", para))
    assert listed == set(METRICS), para
