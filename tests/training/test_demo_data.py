"""The default demo task's generator (training/demo_data.py): reproducible to the bit, thin
labelled structures, look-alike blobs as background, a small foreground; and the default demo
task as a publisher prepares it fits the chain (watermark, size)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from training.data import ArrayDataset, DataError, make_segmentation_2d
from training.demo_data import VesselStyle, make_vessels_2d
from training.sidecars.task_prep import DemoDataConfig, demo_dataset, prepare_demo_task

GOLDEN_SHA256 = "f1da2f7ce630dfb7491ef5085c92bea4dca7b3a91c4d987d32e43fe91c3ff61f"
"""SHA-256 of `make_vessels_2d(4, 32, seed=7)`'s arrays: any change of the generator's numbers,
on any platform or numpy version, changes the demo task and must be deliberate."""


def _digest(images: np.ndarray, masks: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in (images, masks):
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _best_threshold_dice(image: np.ndarray, mask: np.ndarray) -> float:
    """The best Dice any single intensity threshold reaches on one image (pixels >= t are
    foreground), over every threshold at once via cumulative sums."""
    order = np.argsort(image.ravel())[::-1]  # brightest first
    fg = mask.ravel()[order].astype(np.int64)
    tp = np.cumsum(fg)  # true positives when the k+1 brightest pixels are called foreground
    predicted = np.arange(1, fg.size + 1)
    return float((2 * tp / (predicted + fg.sum())).max())


def _interior_fraction(mask: np.ndarray) -> float:
    """Share of foreground pixels whose whole 3x3 neighbourhood is foreground (thick parts)."""
    padded = np.pad(mask.astype(bool), 1)
    core = np.ones_like(mask, dtype=bool)
    h, w = mask.shape
    for dy in range(3):
        for dx in range(3):
            core &= padded[dy : dy + h, dx : dx + w]
    return float(core.sum() / max(1, mask.sum()))


def test_make_vessels_2d_reproducible_from_seed() -> None:
    a, b, c = (make_vessels_2d(5, 32, seed=s) for s in (3, 3, 4))
    assert np.array_equal(a.inputs, b.inputs) and np.array_equal(a.targets, b.targets)
    assert not np.array_equal(a.targets, c.targets)
    assert a.inputs.shape == (5, 1, 32, 32) and a.inputs.dtype == np.float32
    assert a.targets.shape == (5, 32, 32) and set(np.unique(a.targets)) == {0, 1}
    assert a.kind == "segmentation" and a.num_classes == 2


def test_make_vessels_2d_bit_identical_to_the_recorded_arrays() -> None:
    d = make_vessels_2d(4, 32, seed=7)
    assert _digest(d.inputs, d.targets) == GOLDEN_SHA256


def test_make_vessels_2d_foreground_is_small_and_thin() -> None:
    d = demo_dataset(DemoDataConfig())
    fraction = d.targets.mean()
    assert 0.08 < fraction < 0.25, fraction  # class imbalance: about one pixel in six
    assert d.targets.reshape(len(d), -1).any(axis=1).all()  # every image has something to find
    thin = np.mean([_interior_fraction(m) for m in d.targets])
    shapes = make_segmentation_2d(20, 80, seed=0)
    thick = np.mean([_interior_fraction(m) for m in shapes.targets])
    assert thin < 0.35 and thick > 0.8, (thin, thick)


def test_make_vessels_2d_needs_shape_not_brightness() -> None:
    """No intensity threshold segments the demo images well, not even the best one per image
    (which a model could never know): blobs as bright as the vessels are background, and blur
    and noise smear thin walls. Without noise and blur the blobs alone are what a threshold
    cannot get past; the old shapes task is almost solved by one."""

    def best(d: ArrayDataset) -> list[float]:
        return [_best_threshold_dice(img, m) for img, m in zip(d.inputs[:, 0], d.targets,
                                                                strict=True)]

    assert np.mean(best(make_vessels_2d(24, 80, seed=7))) < 0.75
    clean = VesselStyle(noise=(0.0, 0.0), blur_orders=(0,))
    assert np.mean(best(make_vessels_2d(24, 80, seed=7, style=clean))) < 0.9
    no_blobs = VesselStyle(noise=(0.0, 0.0), blur_orders=(0,), blobs=(0, 0))
    assert min(best(make_vessels_2d(24, 80, seed=7, style=no_blobs))) == 1.0
    assert np.mean(best(make_segmentation_2d(24, 80, seed=7))) > 0.95


def test_make_vessels_2d_blobs_hide_the_vessels_under_them() -> None:
    covered = 0
    for seed in range(12):
        # Same random numbers up to the blobs: the same vessels and rings, less what blobs cover.
        with_blobs = make_vessels_2d(1, 48, seed=seed).targets
        without = make_vessels_2d(1, 48, seed=seed, style=VesselStyle(blobs=(0, 0))).targets
        assert (with_blobs <= without).all()
        covered += int(without.sum() - with_blobs.sum())
    assert covered > 0


def test_make_vessels_2d_scales_with_the_image() -> None:
    small, large = make_vessels_2d(40, 16, seed=0), make_vessels_2d(40, 96, seed=0)
    assert small.targets.reshape(40, -1).any(axis=1).all()  # at least one vessel, even at 16x16
    assert 0.05 < large.targets.mean() < 0.3 and 0.05 < small.targets.mean() < 0.5


@pytest.mark.parametrize("kwargs", [
    {"n": 0, "size": 32}, {"n": 2, "size": 4},
    {"n": 2, "size": 32, "style": VesselStyle(blur_orders=(3,))},
    {"n": 2, "size": 32, "style": VesselStyle(blur_orders=())},
    {"n": 2, "size": 32, "style": VesselStyle(noise=(0.2, 0.1))},
    {"n": 2, "size": 32, "style": VesselStyle(vessel_radius=(-1.0, 1.0))},
])
def test_invalid_make_vessels_2d_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(DataError):
        make_vessels_2d(seed=0, **kwargs)  # type: ignore[arg-type]


def test_invalid_demo_generator_name() -> None:
    with pytest.raises(ValueError, match="unknown demo generator"):
        demo_dataset(DemoDataConfig(samples=8, image_size=16, generator="discs"))  # type: ignore[arg-type]


def test_demo_dataset_keeps_the_old_shapes_on_request() -> None:
    cfg = DemoDataConfig(samples=6, image_size=16, generator="shapes")
    old = make_segmentation_2d(6, 16, seed=cfg.seed)
    new = demo_dataset(cfg)
    assert np.array_equal(new.inputs, old.inputs) and np.array_equal(new.targets, old.targets)


def test_default_demo_task_fits_the_chain(tmp_path: Path) -> None:
    """The default demo task as `dlbc task submit --demo` prepares it: its model carries the
    genesis watermark scheme (prepare_task refuses it otherwise), its inputs are 80x80, and
    what a miner downloads stays under 8 MB."""
    task = prepare_demo_task(tmp_path / "artifacts" / "demo", "http://127.0.0.1:1")
    spec = task.spec
    assert list(spec.input_shape) == [1, 80, 80] and spec.metric == "dice"
    train_bytes = (task.directory / "train.npz.enc").stat().st_size
    test_bytes = (task.directory / "test.npz.enc").stat().st_size
    assert spec.data_size_bytes == train_bytes
    assert train_bytes + test_bytes < 8_000_000, (train_bytes, test_bytes)
    assert spec.num_samples == 72


def test_devnet_and_localnet_publish_the_default_demo_task() -> None:
    """`dlbc devnet` passes its own samples/image size/hparams to the publisher and `dlbc
    localnet --demo` its own --samples: both must be the task this card measured."""
    from dlbc_ops.devnet.config import DevnetConfig
    from dlbc_ops.localnet import demo

    cfg, devnet = DemoDataConfig(), DevnetConfig()
    assert (devnet.samples, devnet.image_size, devnet.hparams) == (cfg.samples, cfg.image_size,
                                                                  cfg.hparams)
    assert demo.DEMO_SAMPLES == cfg.samples
    assert demo.SMALL_BUDGET_S == 5.5  # a tenth of the strong miner's ~55 s of a 60 s TRAIN
