"""Data sets: reproducible generators, digits, the documented .npz layout; bad files refused."""

from __future__ import annotations

import io
import pickle
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.training.npz_crafting import npz_bomb, patch_member_size, streamed_npz
from training.data import (
    MAX_EXPANSION,
    ArrayDataset,
    DataError,
    load_digits_dataset,
    load_npz,
    make_segmentation_2d,
    make_segmentation_3d,
    max_decoded_bytes,
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


# --------------------------------------------------------------------------------------------
# Decompression bombs and archives that lie about their sizes (docs/artifacts.md "Data sets")


def test_invalid_npz_bomb_refused_with_bounded_memory() -> None:
    blob = npz_bomb()
    assert len(blob) < 200_000  # 0.16 MB on the wire
    decoded = 1280 * 256 * 256 * (4 + 8)
    assert decoded == 960 << 20  # what the old loader built in memory (x6,000)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="would decode to 1006632960 bytes"):
            load_npz(blob)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak  # headers and the zip directory only: no array was inflated


def test_invalid_npz_expansion_tied_to_archive_size() -> None:
    # Well under the absolute cap, but 160 KiB of images from a 1 KiB archive.
    blob = streamed_npz({"images": ("u1", (40, 1, 32, 32), 40 * 32 * 32),
                         "labels": ("i8", (40,), 320)})
    assert MAX_EXPANSION * len(blob) < 40 * 32 * 32 * 4
    with pytest.raises(DataError, match="would decode"):
        load_npz(blob)
    assert max_decoded_bytes(1000) == MAX_EXPANSION * 1000
    assert max_decoded_bytes(10**12) == 4 << 30


def test_real_compressed_data_loads_under_the_expansion_limit() -> None:
    d = make_segmentation_2d(64, 32, seed=3)
    buf = io.BytesIO()
    np.savez_compressed(buf, images=np.clip(d.inputs * 200, 0, 255).astype(np.uint8),
                        masks=d.targets.astype(bool))
    back = load_npz(buf.getvalue())
    assert np.array_equal(back.targets, d.targets)
    fortran = _npz(images=np.asfortranarray(d.inputs), masks=np.asfortranarray(d.targets))
    back = load_npz(fortran)
    assert np.array_equal(back.inputs, d.inputs) and np.array_equal(back.targets, d.targets)


def test_invalid_npz_header_larger_than_member() -> None:
    # The .npy header claims 64 KiB of data, the member holds 100 bytes: refused before reading.
    blob = streamed_npz({"images": ("u1", (64, 1, 32, 32), 100), "labels": ("i8", (64,), 512)},
                        method=zipfile.ZIP_STORED)
    with pytest.raises(DataError, match="header describes 65536 data bytes"):
        load_npz(blob)


def test_invalid_npz_member_lying_about_its_size() -> None:
    # Header and zip directory agree on 32 data bytes; the deflated stream really holds 64 MiB.
    honest = streamed_npz({"images": ("u1", (2, 1, 4, 4), 64 << 20),
                           "labels": ("i8", (2,), 16)})
    header_len = 128  # write_array_header_1_0 pads the header to 128 bytes here
    lying = patch_member_size(honest, b"images.npy", header_len + 32)
    with zipfile.ZipFile(io.BytesIO(lying)) as zf:
        assert zf.getinfo("images.npy").file_size == header_len + 32  # the lie is read
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="unreadable: Bad CRC"):
            load_npz(lying)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak  # zipfile stopped at the claimed size; nothing grew


def test_invalid_npz_member_shorter_than_it_says() -> None:
    # Directory and header agree on 64 data bytes (what would be allocated); the member holds 32.
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        honest = streamed_npz({"images": ("u1", (2, 1, 4, 8), 32), "labels": ("i8", (2,), 16)},
                              method=method)
        lying = patch_member_size(honest, b"images.npy", 128 + 64)
        with pytest.raises(DataError, match="shorter than its header says"):
            load_npz(lying)
    # Directory says 64, header says 32: the two disagree before anything is read.
    honest = streamed_npz({"images": ("u1", (2, 1, 4, 4), 32), "labels": ("i8", (2,), 16)})
    with pytest.raises(DataError, match="archive says it holds 64"):
        load_npz(patch_member_size(honest, b"images.npy", 128 + 64))


def test_invalid_npz_duplicate_member() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        zf.writestr("images.npy", _member(np.zeros((1, 1, 2, 2), np.float32)))
        zf.writestr("images.npy", _member(np.zeros((9, 1, 2, 2), np.float32)))
        zf.writestr("labels.npy", _member(np.zeros(1, np.int64)))
    with pytest.raises(DataError, match="two members"):
        load_npz(buf.getvalue())


def _member(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()
