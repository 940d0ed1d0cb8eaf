"""The default demo task's data: thin, touching vessels and rings among look-alike blobs.

Why a second generator: `data.make_segmentation_2d` (a few large discs and boxes) is solved to
Dice ~0.99 within seconds, so on the devnet a miner that trained 5 s tied one that trained 55 s
and the chain's "proof of useful work" did not reward work (issue 14). Here the foreground is
thin curvilinear structures, one to three pixels wide, that cross and touch; thick blobs of the
same brightness are background; a smooth illumination gradient, blur and noise hide the rest.
Intensity alone cannot separate the classes, so a model has to learn shape (thin vs thick,
elongated vs round), then faint vessels under noise, then where a blurred boundary lies: the
validation Dice keeps rising over a whole TRAIN phase on one CPU thread. The data-set card,
with measured curves, is training/DEMO_DATA.md.

Determinism: the same seed gives bit-identical arrays on every platform. Everything is drawn from
numpy's PCG64 (`Generator.random`/`integers` are portable) and computed with IEEE-exact
operations only (+, -, *, /, sqrt, floor, comparisons) in float64, cast to float32 once at the
end: no sin/cos/exp (whose last bit depends on the libm), no `Generator.normal` (its ziggurat
tail calls libm), no library filters. Curves are cubic Béziers (polynomials), the blur is a
binomial kernel whose taps are exact binary fractions, and the noise is a sum of four uniforms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from training.data import ArrayDataset, DataError

REFERENCE_SIDE = 64
"""Structure counts in `VesselStyle` are per image of this side; other sizes scale by area."""

_BINOMIAL: dict[int, tuple[float, ...]] = {
    0: (1.0,),  # no blur
    2: (0.25, 0.5, 0.25),  # std 0.71 px
    4: (0.0625, 0.25, 0.375, 0.25, 0.0625),  # std 1.0 px
}
"""Binomial blur kernels by order: a Gaussian's discrete cousin, every tap exact in binary."""
_SQRT3 = math.sqrt(3.0)  # correctly rounded by IEEE 754 on every platform
_POINT_SPACING = 0.25
"""Béziers are sampled at most this far apart (px), so a rasterised vessel has no gaps."""


@dataclass(frozen=True, slots=True)
class VesselStyle:
    """What `make_vessels_2d` draws; ranges are (low, high), drawn uniformly per structure or
    per image. Counts are per `REFERENCE_SIDE`² pixels and scale with the image's area."""

    vessels: tuple[int, int] = (3, 7)
    """Foreground Bézier vessels per image (at least one whatever the size)."""
    vessel_radius: tuple[float, float] = (0.5, 1.5)
    """Half-width in px at each end of a vessel (tapering linearly between): 1-3 px wide."""
    rings: tuple[int, int] = (1, 3)
    """Foreground rings per image, each placed to touch a vessel."""
    ring_radius: tuple[float, float] = (3.0, 12.0)
    """Ring radius (px, to the middle of its wall), capped at a fifth of the image side."""
    ring_wall: tuple[float, float] = (0.6, 1.4)
    """Half-thickness of a ring's wall, px."""
    blobs: tuple[int, int] = (1, 3)
    """Background look-alikes: filled ellipses as bright as the vessels, occluding them."""
    blob_radius: tuple[float, float] = (2.5, 10.0)
    """Semi-axes of a blob, px (at least twice a vessel's half-width: thick, so learnable)."""
    contrast: tuple[float, float] = (0.25, 0.7)
    """Brightness of each structure above the background."""
    noise: tuple[float, float] = (0.04, 0.12)
    """Per-image noise standard deviation (the background level is ~0.3)."""
    blur_orders: tuple[int, ...] = (2, 4)
    """Binomial blur orders to pick from per image: 2 (std 0.71 px) or 4 (1.0 px); 0 none."""


def make_vessels_2d(
    n: int, size: int = REFERENCE_SIDE, *, seed: int, style: VesselStyle | None = None
) -> ArrayDataset:
    """`n` single-channel `size`² images of thin vessels and rings (foreground, 1) among blobs
    (background, 0), blurred and noisy; binary masks. The same `seed` gives bit-identical
    arrays on every platform (module docstring)."""
    style = style or VesselStyle()
    _check(n, size, style)
    rng = np.random.Generator(np.random.PCG64(seed))
    area = (size / REFERENCE_SIDE) ** 2
    images = np.empty((n, 1, size, size), dtype=np.float32)
    masks = np.empty((n, size, size), dtype=np.int64)
    for i in range(n):
        image, mask = _draw_one(rng, size, area, style)
        images[i, 0] = image
        masks[i] = mask
    return ArrayDataset(images, masks, "segmentation", 2)


def _check(n: int, size: int, style: VesselStyle) -> None:
    if n < 1 or size < 8:
        raise DataError(f"make_vessels_2d needs n >= 1 and size >= 8, got n={n} size={size}")
    if any(k not in _BINOMIAL for k in style.blur_orders) or not style.blur_orders:
        raise DataError(f"blur orders must be among {sorted(_BINOMIAL)}, got {style.blur_orders}")
    for name in ("vessels", "rings", "blobs", "vessel_radius", "ring_radius", "ring_wall",
                 "blob_radius", "contrast", "noise"):
        lo, hi = getattr(style, name)
        if not 0 <= lo <= hi:
            raise DataError(f"VesselStyle.{name} must be 0 <= low <= high, got {(lo, hi)}")


def _count(rng: np.random.Generator, bounds: tuple[int, int], area: float, least: int) -> int:
    """A structure count in `bounds` scaled by `area`, at least `least`."""
    lo = max(least, round(bounds[0] * area))
    hi = max(lo, round(bounds[1] * area))
    return int(rng.integers(lo, hi + 1))


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    return lo + (hi - lo) * float(rng.random())


def _draw_one(rng: np.random.Generator, size: int, area: float,
              style: VesselStyle) -> tuple[np.ndarray, np.ndarray]:
    """One (image, mask) pair: float64 (size, size) and bool (size, size)."""
    grid = np.arange(size, dtype=np.float64)  # pixel centres
    yy, xx = np.meshgrid(grid, grid, indexing="ij")  # (S, S) each
    bright = np.zeros((size, size))  # noiseless structure brightness above background
    mask = np.zeros((size, size), dtype=bool)
    centrelines: list[np.ndarray] = []
    for _ in range(_count(rng, style.vessels, area, 1)):
        line, on = _vessel(rng, size, style)
        level = _uniform(rng, style.contrast)
        bright = np.maximum(bright, level * on)
        mask |= on
        centrelines.append(line)
    cap = max(style.ring_radius[0], size / 5)
    for _ in range(_count(rng, style.rings, area, 0)):
        on = _ring(rng, yy, xx, centrelines, (style.ring_radius[0], min(style.ring_radius[1], cap)),
                   style.ring_wall)
        level = _uniform(rng, style.contrast)
        bright = np.maximum(bright, level * on)
        mask |= on
    for _ in range(_count(rng, style.blobs, area, 0)):
        on = _blob(rng, yy, xx, size, style.blob_radius)
        bright = np.where(on, _uniform(rng, style.contrast), bright)
        mask &= ~on  # a blob hides what lies under it: no label where nothing can be seen
    order = style.blur_orders[int(rng.integers(len(style.blur_orders)))]
    image = _blur(bright, _BINOMIAL[order]) + _illumination(rng, yy, xx, size)
    image += _uniform(rng, style.noise) * _noise(rng, (size, size))
    return image, mask


def _vessel(rng: np.random.Generator, size: int,
            style: VesselStyle) -> tuple[np.ndarray, np.ndarray]:
    """A tapering cubic Bézier vessel: its sampled centreline (m, 2) and its pixels (S, S).

    Control points may lie a little outside the image, so vessels enter and leave at the border
    like a crop of a larger tree. A pixel is foreground when its centre lies within the local
    half-width of some centreline sample; only a window around each sample is tested.
    """
    ctrl = -0.1 * size + 1.2 * size * rng.random((4, 2))  # (4, 2) y, x
    hull = sum(math.sqrt(float(((ctrl[k + 1] - ctrl[k]) ** 2).sum())) for k in range(3))
    m = int(hull / _POINT_SPACING) + 2  # the control polygon is longer than the curve
    t = (np.arange(m, dtype=np.float64) / (m - 1))[:, None]  # (m, 1)
    u = 1.0 - t
    line = (u * u * u * ctrl[0] + 3.0 * u * u * t * ctrl[1] + 3.0 * u * t * t * ctrl[2]
            + t * t * t * ctrl[3])  # (m, 2)
    r0, r1 = _uniform(rng, style.vessel_radius), _uniform(rng, style.vessel_radius)
    radius = r0 + (r1 - r0) * t[:, 0]  # (m,)
    reach = math.ceil(max(r0, r1)) + 1
    offsets = np.arange(-reach, reach + 1, dtype=np.float64)
    base = np.floor(line)  # (m, 2)
    py = base[:, 0, None, None] + offsets[None, :, None]  # (m, W, 1) candidate pixel rows
    px = base[:, 1, None, None] + offsets[None, None, :]  # (m, 1, W) candidate pixel columns
    d2 = (py - line[:, 0, None, None]) ** 2 + (px - line[:, 1, None, None]) ** 2  # (m, W, W)
    hit = (d2 <= (radius * radius)[:, None, None]) & (py >= 0) & (py < size) & (px >= 0) & (px < size)
    rows = np.broadcast_to(py, hit.shape)[hit].astype(np.intp)
    cols = np.broadcast_to(px, hit.shape)[hit].astype(np.intp)
    on = np.zeros((size, size), dtype=bool)
    on[rows, cols] = True
    return line, on


def _ring(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, centrelines: list[np.ndarray],
          radius_bounds: tuple[float, float], wall_bounds: tuple[float, float]) -> np.ndarray:
    """A ring whose wall touches a random point of a random vessel (touching structures)."""
    line = centrelines[int(rng.integers(len(centrelines)))]
    anchor = line[int(rng.integers(len(line)))]
    radius, wall = _uniform(rng, radius_bounds), _uniform(rng, wall_bounds)
    dy, dx = _unit_vector(rng)
    cy, cx = anchor[0] + radius * dy, anchor[1] + radius * dx
    d2 = (yy - cy) ** 2 + (xx - cx) ** 2
    on: np.ndarray = ((radius - wall) ** 2 <= d2) & (d2 <= (radius + wall) ** 2)
    return on


def _blob(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: int,
          radius_bounds: tuple[float, float]) -> np.ndarray:
    """A filled axis-aligned ellipse anywhere in the image."""
    cy, cx = size * float(rng.random()), size * float(rng.random())
    ry, rx = _uniform(rng, radius_bounds), _uniform(rng, radius_bounds)
    on: np.ndarray = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    return on


def _unit_vector(rng: np.random.Generator) -> tuple[float, float]:
    """A uniformly oriented unit vector by rejection from the square (no sin/cos)."""
    while True:
        y, x = 2.0 * float(rng.random()) - 1.0, 2.0 * float(rng.random()) - 1.0
        r2 = y * y + x * x
        if 0.01 < r2 <= 1.0:
            r = math.sqrt(r2)
            return y / r, x / r


def _illumination(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray,
                  size: int) -> np.ndarray:
    """A smooth background: level 0.3 plus a random quadratic ramp (its largest deviation in
    an image is ±0.15 on average, ±0.32 at most)."""
    cy, cx, cyy, cxx, cxy = (0.3 * float(v) - 0.15 for v in rng.random(5))
    y, x = yy / size - 0.5, xx / size - 0.5  # (S, S) in [-0.5, 0.5)
    ramp: np.ndarray = 0.3 + cy * y + cx * x + 2.0 * (cyy * y * y + cxx * x * x + cxy * x * y)
    return ramp


def _blur(image: np.ndarray, taps: tuple[float, ...]) -> np.ndarray:
    """Separable convolution with `taps` along both axes, edges mirrored (fixed sum order)."""
    half = len(taps) // 2
    for axis in (0, 1):
        pad = [(half, half) if a == axis else (0, 0) for a in (0, 1)]
        padded = np.pad(image, pad, mode="reflect")
        n = image.shape[axis]
        out = np.zeros_like(image)
        for j, w in enumerate(taps):
            window = [slice(None), slice(None)]
            window[axis] = slice(j, j + n)
            out += w * padded[tuple(window)]
        image = out
    return image


def _noise(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Zero-mean, unit-variance noise: a sum of four uniforms (Irwin-Hall), scaled."""
    u = rng.random((4, *shape))  # (4, S, S)
    noise: np.ndarray = (((u[0] + u[1]) + (u[2] + u[3])) - 2.0) * _SQRT3
    return noise


__all__ = ["REFERENCE_SIDE", "VesselStyle", "make_vessels_2d"]
