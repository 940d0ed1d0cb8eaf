"""Data sets: reproducible generators, digits, the documented .npz layout; bad files refused."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest

from training.data import (
    ArrayDataset,
    DataError,
    load_digits_dataset,
    load_npz,
    make_segmentation_2d,
    make_segmentation_3d,
)


def test_make_segmentation_2d_reproducible_from_seed() -> None:
    a, b, c = (make_segmentation_2d(6, 16, seed=s) for s in (1, 1, 2))
    assert np.array_equal(a.inputs, b.inputs) and np.array_equal(a.targets, b.targets)
    assert not np.array_equal(a.targets, c.targets)
    assert a.inputs.shape == (6, 1, 16, 16) and a.inputs.dtype == np.float32
    assert a.targets.shape == (6, 16, 16) and set(np.unique(a.targets)) == {0, 1}


def test_make_segmentation_foreground_is_brighter() -> None:
    d = make_segmentation_2d(20, 32, seed=0, noise=0.0)
    fg = d.targets.astype(bool)
    assert 0.05 < fg.mean() < 0.8
    # Without noise, every image separates perfectly by a threshold between its two levels.
    for img, mask in zip(d.inputs[:, 0], fg, strict=True):
        assert img[mask].min() > img[~mask].max()


def test_make_segmentation_3d_shapes() -> None:
    d = make_segmentation_3d(3, 8, seed=5, channels=2)
    assert d.inputs.shape == (3, 2, 8, 8, 8)
    assert d.targets.shape == (3, 8, 8, 8)
    assert d.sample_shape == (2, 8, 8, 8)
    assert 0 < d.targets.mean() < 1


def test_load_digits_dataset_layout() -> None:
    d = load_digits_dataset()
    assert d.inputs.shape == (1797, 1, 8, 8)
    assert d.kind == "classification" and d.num_classes == 10
    assert 0.0 <= d.inputs.min() and d.inputs.max() <= 1.0


def test_split_is_seeded_and_disjoint() -> None:
    d = load_digits_dataset()
    tr, te = d.split(0.25, seed=3)
    tr2, te2 = d.split(0.25, seed=3)
    assert len(tr) + len(te) == len(d) and len(te) == 449
    assert np.array_equal(te.inputs, te2.inputs) and np.array_equal(tr.targets, tr2.targets)
    rows = {r.tobytes() for r in tr.inputs} & {r.tobytes() for r in te.inputs}
    assert len(rows) < 20  # digits has a few duplicate images, nothing more


def test_npz_round_trip_bytes_and_file(tmp_path: Path) -> None:
    d = make_segmentation_2d(4, 16, seed=9)
    back = load_npz(d.to_npz_bytes())
    assert np.array_equal(back.inputs, d.inputs) and np.array_equal(back.targets, d.targets)
    path = d.save_npz(tmp_path / "set.npz")
    assert load_npz(path).kind == "segmentation"


def test_npz_without_channel_axis_and_uint8_masks() -> None:
    buf = io.BytesIO()
    np.savez(buf, images=np.zeros((2, 8, 8), np.uint8), masks=np.ones((2, 8, 8), bool))
    d = load_npz(buf.getvalue())
    assert d.inputs.shape == (2, 1, 8, 8) and d.inputs.dtype == np.float32
    assert d.targets.dtype == np.int64 and d.num_classes == 2


def test_npz_labels() -> None:
    buf = io.BytesIO()
    np.savez(buf, images=np.zeros((3, 1, 8, 8), np.float32), labels=np.array([0, 4, 2]))
    d = load_npz(buf.getvalue())
    assert d.kind == "classification" and d.num_classes == 5


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (_npz(images=np.array([{"a": 1}], dtype=object), labels=np.array([0])), "refused"),
        (_npz(masks=np.zeros((1, 4, 4), np.int64)), "no 'images'"),
        (_npz(images=np.zeros((1, 4, 4)), masks=np.zeros((1, 4, 4), np.int64),
              labels=np.zeros(1, np.int64)), "exactly one"),
        (_npz(images=np.zeros((2, 1, 4, 4)), masks=np.zeros((2, 5, 5), np.int64)), "mask shape"),
        (_npz(images=np.zeros((2, 1, 4, 4)), masks=np.zeros((2, 4, 4), np.float32)), "integers"),
        (_npz(images=np.full((1, 1, 4, 4), np.nan), labels=np.zeros(1, np.int64)), "NaN"),
        (_npz(images=np.zeros((2, 1, 4, 4)), labels=np.zeros(3, np.int64)), "3 targets"),
        (pickle.dumps({"images": [1, 2]}), "not a readable .npz"),
        (b"not a zip at all", "not a readable .npz"),
    ],
)
def test_invalid_npz(blob: bytes, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_npz(blob)


def test_invalid_npz_over_size_cap() -> None:
    blob = _npz(images=np.zeros((64, 1, 32, 32), np.float32), labels=np.zeros(64, np.int64))
    with pytest.raises(DataError, match="cap"):
        load_npz(blob, max_bytes=10_000)


def test_invalid_labels_out_of_range() -> None:
    blob = _npz(images=np.zeros((2, 1, 4, 4), np.float32), labels=np.array([0, 7]))
    with pytest.raises(DataError, match=r"\[0, 3\)"):
        load_npz(blob, num_classes=3)


def test_invalid_dataset_construction() -> None:
    with pytest.raises(DataError, match="float32"):
        ArrayDataset(np.zeros((1, 1, 4, 4)), np.zeros(1, np.int64), "classification", 2)
    with pytest.raises(DataError, match="kind"):
        ArrayDataset(np.zeros((1, 1, 4, 4), np.float32), np.zeros(1, np.int64), "regression", 2)
