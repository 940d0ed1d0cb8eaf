"""The devnet's learning-curve PNG (dlbc_ops/devnet/plots.py `learning_curve_figure`,
`write_learning_curves`): what is drawn, checked on matplotlib's artists, and a real PNG read
back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlbc_ops.devnet.plots import (
    LEARNING_CURVES_PNG,
    learning_curve_figure,
    write_learning_curves,
)


def _points(epochs: list[int], seconds_per_epoch: float, top: float) -> list[dict[str, Any]]:
    """A rising curve shaped like the demo task's: Dice climbing towards `top`."""
    return [{"epoch": e, "seconds": round(e * seconds_per_epoch, 2),
             "score": round(top * e / (e + 4), 4)} for e in epochs]


def round_curves() -> dict[str, list[dict[str, Any]]]:
    """miner-1 trained 55 s (48 epochs, 16 log-spaced points), miner-2 5.5 s (5 epochs)."""
    strong = [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 18, 22, 28, 36, 48]
    return {"miner-1": _points(strong, 1.15, 0.85), "miner-2": _points([1, 2, 3, 4, 5], 1.1, 0.85)}


def test_learning_curve_figure_draws_each_miner_against_epochs_and_seconds() -> None:
    curves = round_curves()
    fig = learning_curve_figure(curves, 7)
    by_epoch, by_seconds = fig.axes
    assert [ln.get_label() for ln in by_epoch.lines] == ["miner-1", "miner-2"]
    for ax, key in ((by_epoch, "epoch"), (by_seconds, "seconds")):
        for line, miner in zip(ax.lines, ("miner-1", "miner-2"), strict=True):
            assert list(line.get_xdata()) == [p[key] for p in curves[miner]]
            assert list(line.get_ydata()) == [p["score"] for p in curves[miner]]
    assert by_epoch.get_xscale() == "linear"  # 1..48: under two decades
    assert "round 7" in fig.texts[0].get_text()
    lo, hi = by_epoch.get_ylim()
    assert lo < 0.85 * 1 / 5 and 0.85 * 48 / 52 < hi <= 1.05


def test_learning_curve_figure_uses_log_epochs_over_two_decades() -> None:
    long_run = {"miner-1": _points([1, 3, 10, 30, 100, 300, 650], 0.08, 0.9)}
    fig = learning_curve_figure(long_run, 2)
    assert fig.axes[0].get_xscale() == "log" and fig.axes[1].get_xscale() == "linear"


def test_learning_curve_figure_without_points_says_so() -> None:
    fig = learning_curve_figure({"miner-1": []}, 3)
    assert all(not ax.lines for ax in fig.axes)
    assert any("no scored checkpoints" in t.get_text() for ax in fig.axes for t in ax.texts)


def test_write_learning_curves_renders_a_png(tmp_path: Path) -> None:
    from PIL import Image

    path = write_learning_curves(round_curves(), 7, tmp_path / "plots" / LEARNING_CURVES_PNG)
    assert path == tmp_path / "plots" / LEARNING_CURVES_PNG
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (1100, 420)
        pixels = img.convert("RGB")
        colours = pixels.getcolors(maxcolors=1 << 16)
    # Not a blank canvas: text, axes and two coloured lines give many distinct colours.
    assert colours is None or len(colours) > 50


def test_write_learning_curves_into_a_folder(tmp_path: Path) -> None:
    from matplotlib.image import imread

    path = write_learning_curves(round_curves(), 1, tmp_path / "plots")
    assert path == tmp_path / "plots" / LEARNING_CURVES_PNG
    img = imread(path)
    assert img.shape[:2] == (420, 1100) and img.std() > 0.01
