"""Training and test data: synthetic segmentation sets, scikit-learn digits, users' `.npz` files.

Everything runs offline (docs/artifacts.md): the synthetic generators are reproducible from a seed,
so a publisher, a miner and a validator can regenerate byte-identical sets, and `load_digits` ships
inside scikit-learn.

Array layouts (the `.npz` contract for users' own data, docs/artifacts.md):

* ``images``: real numbers, ``(N, C, H, W)`` for 2D or ``(N, C, D, H, W)`` for 3D. A missing
  channel axis is accepted when ``images`` has the same number of axes as ``masks`` (then
  ``C = 1``). Values are used as given (cast to float32): normalise before saving.
* ``masks`` (segmentation): integers or bools, ``(N, H, W)`` / ``(N, D, H, W)``, values are
  class indices in ``[0, num_classes)``; 0 is background. Binary masks use {0, 1}.
* ``labels`` (classification): integers ``(N,)`` in ``[0, num_classes)``.

Exactly one of ``masks`` / ``labels`` must be present. Files are read with
``allow_pickle=False``: object arrays are refused, never unpickled.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from training.npz_reader import ArchiveError, BoundedNpz

TaskKind = Literal["segmentation", "classification"]

# Bytes the arrays of an .npz may take once loaded, whatever its size; callers can change it.
DEFAULT_MAX_NPZ_BYTES = 4 << 30
MAX_EXPANSION = 128
"""Loaded arrays may take at most this many times the archive's bytes (decompression bombs).

Real data sets land well under it (measured with `np.savez_compressed`, loaded as float32
images + int64 targets, docs/artifacts.md): sklearn digits x10, natural photos with a
threshold mask x18, CT-like slices (empty background, sparse organ masks) x34, our noisy
synthetic sets x3-13; uncompressed `np.savez` at most x8 (uint8 → int64). A deflate bomb of
zeros reaches x1,000 before conversion and x8,000 after. Only noiseless synthetic shapes
(x400-700) and all-zero arrays come above the limit."""


class DataError(ValueError):
    """A data set that does not follow the documented layout."""


@dataclass(frozen=True)
class ArrayDataset:
    """An in-memory data set: `inputs` float32 (N, C, *spatial), `targets` int64.

    `targets` are masks (N, *spatial) for segmentation or labels (N,) for classification.
    """

    inputs: np.ndarray
    targets: np.ndarray
    kind: TaskKind
    num_classes: int

    def __post_init__(self) -> None:
        _validate(self.inputs, self.targets, self.kind, self.num_classes)

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Per-sample input shape (C, *spatial), as `models.model_stats` takes it."""
        return tuple(int(s) for s in self.inputs.shape[1:])

    def subset(self, index: np.ndarray | slice) -> ArrayDataset:
        """The samples at `index` (an index array, boolean mask or slice)."""
        return ArrayDataset(self.inputs[index], self.targets[index], self.kind, self.num_classes)

    def split(self, test_fraction: float, *, seed: int) -> tuple[ArrayDataset, ArrayDataset]:
        """A seeded shuffle split into (train, test); both parts are non-empty."""
        n = len(self)
        n_test = round(n * test_fraction)
        if not 0 < n_test < n:
            raise DataError(f"cannot split {n} samples with test_fraction={test_fraction}")
        order = np.random.Generator(np.random.PCG64(seed)).permutation(n)
        return self.subset(np.sort(order[n_test:])), self.subset(np.sort(order[:n_test]))

    def to_npz_bytes(self) -> bytes:
        """Serialise in the documented `.npz` layout (uncompressed, deterministic bytes)."""
        buf = io.BytesIO()
        if self.kind == "segmentation":
            np.savez(buf, images=self.inputs, masks=self.targets)
        else:
            np.savez(buf, images=self.inputs, labels=self.targets)
        return buf.getvalue()

    def save_npz(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_bytes(self.to_npz_bytes())
        return path


def _validate(inputs: np.ndarray, targets: np.ndarray, kind: str, num_classes: int) -> None:
    if kind not in ("segmentation", "classification"):
        raise DataError(f"kind must be 'segmentation' or 'classification', got {kind!r}")
    if inputs.dtype != np.float32:
        raise DataError(f"inputs must be float32, got {inputs.dtype}")
    if targets.dtype != np.int64:
        raise DataError(f"targets must be int64, got {targets.dtype}")
    if inputs.ndim not in (4, 5):
        raise DataError(f"inputs must be (N, C, H, W) or (N, C, D, H, W), got {inputs.shape}")
    if inputs.shape[0] == 0:
        raise DataError("data set is empty")
    if targets.shape[:1] != inputs.shape[:1]:
        raise DataError(f"{targets.shape[0]} targets for {inputs.shape[0]} images")
    if kind == "segmentation" and targets.shape[1:] != inputs.shape[2:]:
        raise DataError(f"mask shape {targets.shape[1:]} != image spatial shape {inputs.shape[2:]}")
    if kind == "classification" and targets.ndim != 1:
        raise DataError(f"labels must be (N,), got {targets.shape}")
    if not 2 <= num_classes <= 1000:
        raise DataError(f"num_classes={num_classes} out of range [2, 1000]")
    if targets.min() < 0 or targets.max() >= num_classes:
        raise DataError(f"target values must lie in [0, {num_classes})")
    if not np.isfinite(inputs).all():
        raise DataError("images contain NaN or infinity")


# --------------------------------------------------------------------------------------------
# Synthetic segmentation sets


def make_segmentation_2d(
    n: int, size: int = 32, *, seed: int, channels: int = 1, max_shapes: int = 3,
    noise: float = 0.15,
) -> ArrayDataset:
    """`n` images of random discs and rectangles on a noisy background, with binary masks.

    Foreground pixels are brighter than background by a random contrast, and Gaussian noise of
    standard deviation `noise` is added, so the task needs real (if small) learning. The same
    `seed` always gives the same arrays on every platform (numpy's PCG64 is portable).
    """
    return _make_segmentation(n, (size, size), seed, channels, max_shapes, noise)


def make_segmentation_3d(
    n: int, size: int = 16, *, seed: int, channels: int = 1, max_shapes: int = 3,
    noise: float = 0.15,
) -> ArrayDataset:
    """The 3D analogue of `make_segmentation_2d`: balls and boxes in `size`^3 volumes."""
    return _make_segmentation(n, (size, size, size), seed, channels, max_shapes, noise)


def _make_segmentation(
    n: int, spatial: tuple[int, ...], seed: int, channels: int, max_shapes: int, noise: float
) -> ArrayDataset:
    if n < 1 or min(spatial) < 4 or channels < 1 or max_shapes < 1 or noise < 0:
        raise DataError(f"bad generator arguments n={n} spatial={spatial} channels={channels}")
    rng = np.random.Generator(np.random.PCG64(seed))
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in spatial], indexing="ij")
    images = np.empty((n, channels, *spatial), dtype=np.float32)
    masks = np.zeros((n, *spatial), dtype=np.int64)
    for i in range(n):
        fg = np.zeros(spatial, dtype=bool)
        for _ in range(int(rng.integers(1, max_shapes + 1))):
            centre = [rng.uniform(0.2 * s, 0.8 * s) for s in spatial]
            radius = [rng.uniform(0.12 * s, 0.3 * s) for s in spatial]
            if rng.random() < 0.5:  # ellipse / ellipsoid
                d = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radius, strict=True))
                fg |= d <= 1.0
            else:  # rectangle / box
                inside = np.ones(spatial, dtype=bool)
                for g, c, r in zip(grids, centre, radius, strict=True):
                    inside &= np.abs(g - c) <= r
                fg |= inside
        masks[i] = fg
        contrast = rng.uniform(0.5, 1.0, size=channels).astype(np.float32)
        base = rng.uniform(0.0, 0.3, size=channels).astype(np.float32)
        for c in range(channels):
            images[i, c] = base[c] + contrast[c] * fg
        images[i] += rng.normal(0.0, noise, size=images[i].shape).astype(np.float32)
    return ArrayDataset(images, masks, "segmentation", 2)


# --------------------------------------------------------------------------------------------
# scikit-learn digits


def load_digits_dataset() -> ArrayDataset:
    """scikit-learn's bundled 8x8 digits (1797 samples, 10 classes), scaled to [0, 1].

    Layout: inputs (1797, 1, 8, 8) float32, labels (1797,) int64. scikit-learn is an optional
    dependency (`pip install dlbc[demo]`), imported only here.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DataError(
            "the digits data set needs scikit-learn: pip install scikit-learn (or dlbc[demo])"
        ) from exc
    bunch: Any = load_digits()
    images = (np.asarray(bunch.images, dtype=np.float32) / 16.0)[:, None, :, :]
    labels = np.asarray(bunch.target, dtype=np.int64)
    return ArrayDataset(np.ascontiguousarray(images), labels, "classification", 10)


# --------------------------------------------------------------------------------------------
# Users' .npz files


def max_decoded_bytes(archive_size: int, ceiling: int = DEFAULT_MAX_NPZ_BYTES) -> int:
    """How large the arrays of an `.npz` of `archive_size` bytes may be once loaded.

    `MAX_EXPANSION` times the archive (whose size a task spec declares as `data_size_bytes`,
    plus the encryption's 16 bytes per MiB), and never above `ceiling`.
    """
    return min(ceiling, MAX_EXPANSION * archive_size)


def load_npz(
    source: str | Path | bytes, *, num_classes: int | None = None,
    max_bytes: int = DEFAULT_MAX_NPZ_BYTES,
) -> ArrayDataset:
    """Load a data set in the documented `.npz` layout from a path or from bytes.

    `num_classes` defaults to max(target) + 1 (at least 2). The arrays as returned (float32
    images, int64 targets) may take at most `max_decoded_bytes(archive size, max_bytes)`; that
    is checked from the zip directory and the `.npy` headers before any array data is inflated
    (`training.npz_reader`), so a decompression bomb costs a few kilobytes of memory to refuse.
    Pickled object arrays are refused, never unpickled.
    """
    size = len(source) if isinstance(source, bytes) else Path(source).stat().st_size
    cap = max_decoded_bytes(size, max_bytes)
    try:
        with BoundedNpz(source) as npz:
            names = npz.names
            if "images" not in names:
                raise DataError(f"npz has no 'images' array (found: {sorted(names)})")
            has_masks, has_labels = "masks" in names, "labels" in names
            if has_masks == has_labels:
                raise DataError("npz must contain exactly one of 'masks' or 'labels'")
            target = "masks" if has_masks else "labels"
            plans = npz.plan({"images": 4, target: 8}, cap)  # float32 images, int64 targets
            images = npz.read(plans["images"])
            targets = npz.read(plans[target])
    except ArchiveError as exc:
        raise DataError(f"refused npz ({size} bytes): {exc}") from None
    return _from_arrays(images, targets, "segmentation" if has_masks else "classification",
                        num_classes)


def _from_arrays(
    images: np.ndarray, targets: np.ndarray, kind: TaskKind, num_classes: int | None
) -> ArrayDataset:
    if images.dtype.kind not in "biuf":
        raise DataError(f"images must be numeric, got dtype {images.dtype}")
    if targets.dtype.kind not in "biu":
        raise DataError(f"{'masks' if kind == 'segmentation' else 'labels'} must be integers "
                        f"or bools, got dtype {targets.dtype}")
    if kind == "segmentation" and images.ndim == targets.ndim:
        images = images[:, None]  # add the missing channel axis
    if targets.size == 0:
        raise DataError("data set is empty")
    inferred = max(2, int(targets.max()) + 1)
    return ArrayDataset(
        np.ascontiguousarray(images, dtype=np.float32),
        np.ascontiguousarray(targets, dtype=np.int64),
        kind,
        inferred if num_classes is None else num_classes,
    )
